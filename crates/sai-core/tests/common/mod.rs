//! Helpers shared by the config tests.

/// Every entry of `expect` starts one of `problems`, and there are no others.
pub fn assert_problems_start_with(problems: &[String], expect: &[&str]) {
    for e in expect {
        assert!(
            problems.iter().any(|p| p.starts_with(e)),
            "no problem starting with {e:?} in {problems:#?}"
        );
    }
    assert_eq!(problems.len(), expect.len(), "{problems:#?}");
}
