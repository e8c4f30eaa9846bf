-- 0005_maintenance_windows: shape rules for the maintenance_windows table of 0001.
--
-- A recurring window may be unbounded, so start_time becomes optional. endpoint_name keeps
-- the name a config window gave (ids are not known in the TOML); it is resolved to
-- endpoint_id at every start. Config windows are matched to the file by name.
ALTER TABLE maintenance_windows ALTER COLUMN start_time DROP NOT NULL;
ALTER TABLE maintenance_windows ADD COLUMN endpoint_name text;
ALTER TABLE maintenance_windows ADD CONSTRAINT maintenance_windows_shape CHECK (
    (cron IS NULL AND start_time IS NOT NULL AND end_time IS NOT NULL AND timezone IS NULL)
    OR (cron IS NOT NULL AND duration IS NOT NULL AND timezone IS NOT NULL)
);
ALTER TABLE maintenance_windows ADD CONSTRAINT maintenance_windows_duration_positive
    CHECK (duration IS NULL OR duration > interval '0');
CREATE UNIQUE INDEX maintenance_windows_config_name_key ON maintenance_windows (name)
    WHERE source = 'config';
