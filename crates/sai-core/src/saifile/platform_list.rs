//! A configuration's `platforms` selection list, e.g.
//! `"none, linux-fedora, not linux-fedora-32/riscv64"`.
//!
//! Mirrors the original server's loop exactly:
//!
//! 1. Start with `selected` = the platform's `default`.
//! 2. Split the list into tokens on commas and whitespace (`/`, `-`, `.`
//!    and `_` stay inside tokens).
//! 3. For each token, in order:
//!    * if the **token is a prefix of the keyword** `none` (the original's
//!      `strncmp(token, "none", token_len)`, so `n`, `no`, `non` and `none`
//!      all count): `selected = false` and the pending negation is cleared;
//!    * else if the token is a prefix of `not` (i.e. `not`; shorter forms
//!      were already taken by `none`): negate the next token;
//!    * else, if the token [`tuple_matches`] the platform:
//!      `selected = !negated`, and **stop scanning** if that made it true;
//!      then (matched or not) clear the negation.
//!
//! So `not X` only deselects a platform some earlier token selected (or a
//! default one), a later positive token re-selects it, and the first positive
//! match wins over any later `not`.

use crate::platform::tuple_matches;

/// Tokens of a platform list: split on commas and whitespace, empties dropped.
pub fn tokens(list: &str) -> impl Iterator<Item = &str> {
    list.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
}

/// Does the configuration's `platforms` list (`None` = not given) select
/// the saifile platform `platform`, whose `default` flag is `platform_default`?
/// See the module docs for the rule.
pub fn selects(list: Option<&str>, platform: &str, platform_default: bool) -> bool {
    let mut selected = platform_default;
    let Some(list) = list else {
        return selected;
    };
    let mut negated = false;
    for token in tokens(list) {
        if "none".starts_with(token) {
            negated = false;
            selected = false;
            continue;
        }
        if "not".starts_with(token) {
            negated = true;
            continue;
        }
        if tuple_matches(token, platform) {
            selected = !negated;
            if selected {
                break;
            }
        }
        negated = false;
    }
    selected
}

/// Is `token` one of the list keywords (`none` and its prefixes, `not`)?
pub fn is_keyword(token: &str) -> bool {
    "none".starts_with(token) || "not".starts_with(token)
}
