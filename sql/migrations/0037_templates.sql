-- Issue 21: stored templates, per app, with immutable numbered versions and an active one.
-- A deleted template keeps its row and its versions (deleted_at set): the jobs that name it still say what
-- they were rendered from, and every lookup of the API leaves it out (404).
CREATE TABLE templates (
    id              uuid NOT NULL CONSTRAINT templates_pkey PRIMARY KEY,
    app_id          bigint NOT NULL CONSTRAINT templates_app_id_fkey REFERENCES apps (id),
    name            text NOT NULL CONSTRAINT templates_name_check CHECK (length(name) BETWEEN 1 AND 200),
    active_version  integer NOT NULL CONSTRAINT templates_active_version_check CHECK (active_version >= 1),
    -- the highest version number given out: the next version is latest_version + 1
    latest_version  integer NOT NULL CONSTRAINT templates_latest_version_check CHECK (latest_version >= 1),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz,
    CONSTRAINT templates_active_not_after_latest CHECK (active_version <= latest_version)
);
CREATE INDEX templates_app_idx ON templates (app_id, created_at DESC, id DESC) WHERE deleted_at IS NULL;

CREATE TABLE template_versions (
    template_id  uuid NOT NULL CONSTRAINT template_versions_template_id_fkey REFERENCES templates (id)
                     ON DELETE CASCADE,
    version      integer NOT NULL CONSTRAINT template_versions_version_check CHECK (version >= 1),
    subject      text,
    html         text,
    text         text,
    variables    jsonb,  -- a JSON Schema of the variables, or none
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT template_versions_pkey PRIMARY KEY (template_id, version),
    CONSTRAINT template_versions_has_body CHECK (html IS NOT NULL OR text IS NOT NULL)
);

-- The active version is one that exists (checked at commit: a template and its version 1 arrive together).
ALTER TABLE templates ADD CONSTRAINT templates_active_version_fkey FOREIGN KEY (id, active_version)
    REFERENCES template_versions (template_id, version) DEFERRABLE INITIALLY DEFERRED;

-- Versions never change: a job or schedule rendered from version n, and the cache of compiled versions each
-- process keeps (services/templates.py), rely on it. Enforced where the data lives, not only by the code.
CREATE FUNCTION mailer_refuse_version_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'template versions never change (template %, version %)', OLD.template_id, OLD.version
        USING ERRCODE = 'restrict_violation';
END;
$$;
CREATE TRIGGER template_versions_immutable BEFORE UPDATE ON template_versions
    FOR EACH ROW EXECUTE FUNCTION mailer_refuse_version_update();

-- Jobs and schedules keep the rendered message and which template version it came from. Nullable with no
-- default: metadata only, on every partition of jobs (issue 20) and of schedules.
ALTER TABLE jobs ADD COLUMN template_id uuid, ADD COLUMN template_version integer;
ALTER TABLE schedules ADD COLUMN template_id uuid, ADD COLUMN template_version integer;
-- DELETE /templates/{id} is refused while an active schedule names the template.
CREATE INDEX schedules_active_template_idx ON schedules_active (template_id) WHERE template_id IS NOT NULL;
