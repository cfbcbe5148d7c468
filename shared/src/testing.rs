//! Support for tests that need a real backend server (PostgreSQL, a CQL node).
//!
//! The test command (`deploy/test.sh`) starts the servers and exports their
//! addresses together with `QYZAR_TEST_REQUIRE_BACKENDS=1`; then a backend
//! test that cannot find its server fails. A plain `cargo test` without those
//! variables skips such tests with one printed line each, so the rest of the
//! suite stays useful on a laptop without servers.

/// The value of the environment variable `var` naming a test backend, or
/// `None` after printing one `skipped:` line when the backend is not
/// configured and not required.
///
/// # Panics
/// When the variable is unset but `QYZAR_TEST_REQUIRE_BACKENDS=1`: under the
/// test command a missing backend is a failure, never a silent skip.
pub fn backend(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Some(v),
        _ if required() => {
            panic!("{what}: {var} is not set but QYZAR_TEST_REQUIRE_BACKENDS=1; run deploy/test.sh")
        }
        _ => {
            println!("skipped: {what} (set {var}, or run deploy/test.sh)");
            None
        }
    }
}

/// Whether backend tests must run (set by the test command).
pub fn required() -> bool {
    std::env::var("QYZAR_TEST_REQUIRE_BACKENDS").is_ok_and(|v| v == "1")
}

/// A short random lowercase name for a per-test database or keyspace.
pub fn unique_name(prefix: &str) -> String {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("system random source");
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{prefix}{hex}")
}

/// Reading the project's OpenAPI documents in tests without a YAML crate.
///
/// The documents are written with a fixed two-space indentation (stated in
/// their header comments): paths at indent 2 under `paths:`, operations at
/// indent 4, and the `ErrorCode` schema's `enum:` at indent 6 with one
/// `- name # status` item per line. A line scan of that layout is enough to
/// compare the documents with what the services serve.
pub mod openapi {
    use std::collections::BTreeSet;

    /// The HTTP methods OpenAPI names as operation keys.
    pub const OPERATIONS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];

    /// A documented operation: (METHOD in upper case, path).
    pub type Operation = (String, String);

    /// (METHOD, path) of every operation under `paths:`.
    pub fn documented_operations(doc: &str) -> BTreeSet<Operation> {
        let mut out = BTreeSet::new();
        let mut in_paths = false;
        let mut path: Option<String> = None;
        for line in doc.lines() {
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let indent = line.len() - line.trim_start().len();
            let key = line
                .trim()
                .strip_suffix(':')
                .map(|k| k.trim_matches(|c| c == '\'' || c == '"'));
            match indent {
                0 => {
                    in_paths = line.trim_end() == "paths:";
                    path = None;
                }
                2 if in_paths => path = key.filter(|k| k.starts_with('/')).map(str::to_owned),
                4 => {
                    if let (Some(p), Some(k)) = (&path, key) {
                        if OPERATIONS.contains(&k) {
                            out.insert((k.to_ascii_uppercase(), p.clone()));
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// The `ErrorCode` schema's enum: (code, status from the line's comment).
    pub fn documented_error_codes(doc: &str) -> Vec<(String, Option<u16>)> {
        let mut lines = doc
            .lines()
            .skip_while(|l| l.trim_end() != "    ErrorCode:")
            .skip(1);
        let mut out = Vec::new();
        let mut in_enum = false;
        for line in &mut lines {
            let indent = line.len() - line.trim_start().len();
            if line.trim().is_empty() {
                continue;
            }
            if indent <= 4 {
                break;
            }
            if indent == 6 {
                in_enum = line.trim_end() == "      enum:";
                continue;
            }
            if in_enum {
                if let Some(item) = line.trim().strip_prefix("- ") {
                    let (name, comment) = item.split_once('#').unwrap_or((item, ""));
                    out.push((name.trim().to_owned(), comment.trim().parse().ok()));
                }
            }
        }
        out
    }

    /// Panics, naming `which` document, unless its `ErrorCode` enum lists
    /// exactly [`crate::ErrorCode::ALL`], once each, with the status each
    /// code is answered with beside it. Both services' document tests call it.
    pub fn assert_error_codes_match(doc: &str, which: &str) {
        use crate::ErrorCode;
        let documented = documented_error_codes(doc);
        assert!(
            !documented.is_empty(),
            "the scan of {which} found no ErrorCode enum: has its layout changed?"
        );
        let names: BTreeSet<&str> = documented.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names.len(),
            documented.len(),
            "{which}: a code is listed twice: {documented:?}"
        );
        let shared: BTreeSet<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        let missing: Vec<_> = shared.difference(&names).collect();
        let unknown: Vec<_> = names.difference(&shared).collect();
        assert!(
            missing.is_empty() && unknown.is_empty(),
            "the ErrorCode enum of {which} differs from qyzar_shared::ErrorCode::ALL\n  \
             in the code, not documented: {missing:?}\n  documented, not in the code: {unknown:?}"
        );
        for (name, status) in &documented {
            let code = ErrorCode::ALL
                .iter()
                .find(|c| c.as_str() == name)
                .expect("checked above");
            assert_eq!(
                *status,
                Some(code.status()),
                "{which} documents `{name}` with status {status:?}; the code answers {}",
                code.status()
            );
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn comments_other_schemas_and_paths_outside_paths_are_skipped() {
            let doc = "\
openapi: 3.1.0
paths:
  /a:
    description: not an operation
    get:
      responses: {}
    post:
      parameters: []
  # a comment
  '/b':
    options:
components:
  schemas:
    ErrorCode:
      type: string
      enum:
        - first  # 400
        - second
    Other:
      enum:
        - nope  # 500
  /c:
    get:
";
            let ops: Vec<_> = documented_operations(doc).into_iter().collect();
            let want = [("GET", "/a"), ("OPTIONS", "/b"), ("POST", "/a")];
            assert_eq!(
                ops,
                want.iter()
                    .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
                    .collect::<Vec<_>>()
            );
            assert_eq!(
                documented_error_codes(doc),
                vec![("first".to_owned(), Some(400)), ("second".to_owned(), None)]
            );
        }

        #[test]
        fn error_code_check_catches_a_missing_code_and_a_wrong_status() {
            use crate::ErrorCode;
            let full: String = ErrorCode::ALL
                .iter()
                .map(|c| format!("        - {}  # {}\n", c.as_str(), c.status()))
                .collect();
            let doc = |items: &str| {
                format!("components:\n  schemas:\n    ErrorCode:\n      type: string\n      enum:\n{items}")
            };
            assert_error_codes_match(&doc(&full), "full");
            let missing = full.replacen("        - internal  # 500\n", "", 1);
            assert!(
                std::panic::catch_unwind(|| assert_error_codes_match(&doc(&missing), "m")).is_err()
            );
            let wrong = full.replacen("internal  # 500", "internal  # 503", 1);
            assert!(
                std::panic::catch_unwind(|| assert_error_codes_match(&doc(&wrong), "w")).is_err()
            );
        }

        #[test]
        fn the_scan_reads_paths_operations_and_error_codes() {
            let doc = "openapi: 3.1.0\npaths:\n  /ping:\n    get:\n      summary: x\n    head:\n      summary: y\n  '/a':\n    post:\n      x: 1\ncomponents:\n  schemas:\n    ErrorCode:\n      type: string\n      enum:\n        - not_found # 404\n        - internal  # 500\n    Other:\n      enum:\n        - nope\n";
            let ops = documented_operations(doc);
            let want: BTreeSet<Operation> = [("GET", "/ping"), ("HEAD", "/ping"), ("POST", "/a")]
                .iter()
                .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
                .collect();
            assert_eq!(ops, want);
            assert_eq!(
                documented_error_codes(doc),
                vec![
                    ("not_found".to_owned(), Some(404)),
                    ("internal".to_owned(), Some(500))
                ]
            );
        }
    }
}
