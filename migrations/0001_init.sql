-- 0001: the rule store and the corrections audit table.
--
-- Rules keep the two table names of the original design: `correction_patterns` holds
-- response-side rules (replace, regex, redact, block, path) and `behavior_patches` holds
-- request-side patches (system_prompt, param, stop). Each row is one rule; `spec` is the rule
-- as JSON, in the shape of a `[[rule]]` table (see rules/README.md), with every default spelled
-- out. `source` is the rule file a rule came from, or 'api' for rules written through the
-- admin API (or by another program); `position` orders rules within their source.

CREATE TABLE correction_patterns (
    id          TEXT PRIMARY KEY NOT NULL,
    kind        TEXT NOT NULL,
    enabled     INTEGER NOT NULL DEFAULT 1,
    mode        TEXT NOT NULL DEFAULT 'enforce',
    spec        TEXT NOT NULL,
    source      TEXT NOT NULL,
    position    INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE behavior_patches (
    id          TEXT PRIMARY KEY NOT NULL,
    kind        TEXT NOT NULL,
    enabled     INTEGER NOT NULL DEFAULT 1,
    mode        TEXT NOT NULL DEFAULT 'enforce',
    spec        TEXT NOT NULL,
    source      TEXT NOT NULL,
    position    INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

-- What each rule file held when it was last stored: a file whose rules are unchanged is
-- not rewritten.
CREATE TABLE rule_files (
    path        TEXT PRIMARY KEY NOT NULL,
    sha256      TEXT NOT NULL,
    rules       INTEGER NOT NULL,
    stored_at   TEXT NOT NULL
);

-- Enable/disable switches set through the admin API; they outlive edits of the rule's file.
CREATE TABLE rule_overrides (
    id          TEXT PRIMARY KEY NOT NULL,
    enabled     INTEGER NOT NULL,
    updated_at  TEXT NOT NULL
);

-- `rules_version` goes up on every change to the rules, whoever makes it, so the proxy can
-- tell a rule change from an audit write when the database changes under it.
CREATE TABLE meta (
    key         TEXT PRIMARY KEY NOT NULL,
    value       INTEGER NOT NULL
);
INSERT INTO meta (key, value) VALUES ('rules_version', 0);

CREATE TRIGGER correction_patterns_ai AFTER INSERT ON correction_patterns
BEGIN UPDATE meta SET value = value + 1 WHERE key = 'rules_version'; END;
CREATE TRIGGER correction_patterns_au AFTER UPDATE ON correction_patterns
BEGIN UPDATE meta SET value = value + 1 WHERE key = 'rules_version'; END;
CREATE TRIGGER correction_patterns_ad AFTER DELETE ON correction_patterns
BEGIN UPDATE meta SET value = value + 1 WHERE key = 'rules_version'; END;
CREATE TRIGGER behavior_patches_ai AFTER INSERT ON behavior_patches
BEGIN UPDATE meta SET value = value + 1 WHERE key = 'rules_version'; END;
CREATE TRIGGER behavior_patches_au AFTER UPDATE ON behavior_patches
BEGIN UPDATE meta SET value = value + 1 WHERE key = 'rules_version'; END;
CREATE TRIGGER behavior_patches_ad AFTER DELETE ON behavior_patches
BEGIN UPDATE meta SET value = value + 1 WHERE key = 'rules_version'; END;
CREATE TRIGGER rule_overrides_ai AFTER INSERT ON rule_overrides
BEGIN UPDATE meta SET value = value + 1 WHERE key = 'rules_version'; END;
CREATE TRIGGER rule_overrides_au AFTER UPDATE ON rule_overrides
BEGIN UPDATE meta SET value = value + 1 WHERE key = 'rules_version'; END;
CREATE TRIGGER rule_overrides_ad AFTER DELETE ON rule_overrides
BEGIN UPDATE meta SET value = value + 1 WHERE key = 'rules_version'; END;

-- One row per correction (applied or shadowed), as in logs/corrections.log. Secrets found by
-- redact rules are stored masked, never whole.
CREATE TABLE corrections (
    id          INTEGER PRIMARY KEY,
    ts          TEXT NOT NULL,      -- RFC 3339, UTC, seconds (as in the log line)
    ts_ms       INTEGER NOT NULL,   -- Unix milliseconds, for range queries
    type        TEXT NOT NULL,      -- the log line's Type
    rule_id     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    mode        TEXT NOT NULL,      -- enforce | shadow
    model       TEXT NOT NULL,
    endpoint    TEXT NOT NULL,
    confidence  REAL NOT NULL,
    detected    TEXT NOT NULL,
    corrected   TEXT NOT NULL
);
CREATE INDEX corrections_ts ON corrections (ts_ms);
CREATE INDEX corrections_rule ON corrections (rule_id, ts_ms);

CREATE VIRTUAL TABLE corrections_fts USING fts5 (
    rule_id, detected, corrected, model,
    content = 'corrections', content_rowid = 'id'
);
CREATE TRIGGER corrections_ai AFTER INSERT ON corrections BEGIN
    INSERT INTO corrections_fts (rowid, rule_id, detected, corrected, model)
    VALUES (new.id, new.rule_id, new.detected, new.corrected, new.model);
END;
CREATE TRIGGER corrections_ad AFTER DELETE ON corrections BEGIN
    INSERT INTO corrections_fts (corrections_fts, rowid, rule_id, detected, corrected, model)
    VALUES ('delete', old.id, old.rule_id, old.detected, old.corrected, old.model);
END;
