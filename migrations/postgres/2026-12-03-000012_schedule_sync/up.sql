-- The Ticker's fingerprint asks for the latest update of any schedule every sync:
-- an index answers it without reading the table.
CREATE INDEX schedules_updated_at ON schedules (updated_at);
