//! The configuration `platforms` list: `none`, `not X`, positive tokens.

use sai_core::saifile::platform_list::selects;

const FEDORA: &str = "linux-fedora-32/x86_64-amd/gcc";
const ESP32: &str = "freertos-espidf/xl6-esp32/gcc";

#[test]
fn absent_or_empty_list_uses_the_platform_default() {
    assert!(selects(None, FEDORA, true));
    assert!(!selects(None, ESP32, false));
    assert!(selects(Some(""), FEDORA, true));
    assert!(!selects(Some(" , "), ESP32, false));
}

#[test]
fn positive_token_adds_a_non_default_platform() {
    assert!(selects(Some("freertos-espidf"), ESP32, false));
    assert!(selects(Some("w10, freertos"), ESP32, false));
    // ... and leaves default platforms selected.
    assert!(selects(Some("freertos"), FEDORA, true));
}

#[test]
fn none_drops_defaults_then_positive_token_readds() {
    assert!(!selects(Some("none"), FEDORA, true));
    assert!(!selects(Some("none, freertos"), FEDORA, true));
    assert!(selects(Some("none, freertos"), ESP32, false));
    assert!(selects(Some("none,linux-fedora"), FEDORA, true));
    // whitespace separates tokens like commas do
    assert!(selects(Some("none linux-fedora"), FEDORA, true));
}

#[test]
fn none_after_a_positive_match_does_nothing_because_scanning_stopped() {
    assert!(selects(Some("linux, none"), FEDORA, true));
    assert!(!selects(Some("freertos, none"), FEDORA, true));
}

#[test]
fn prefixes_of_none_act_as_none() {
    // The token is compared as a prefix OF the keyword (strncmp(token, "none", len)).
    for kw in ["n", "no", "non", "none"] {
        assert!(!selects(Some(kw), FEDORA, true), "{kw}");
    }
    // A word that merely starts with "none" is an ordinary platform token.
    assert!(selects(Some("nonesuch"), FEDORA, true));
    assert!(!selects(Some("none nonesuch"), FEDORA, true));
}

#[test]
fn not_negates_only_the_next_token() {
    assert!(!selects(Some("not linux-fedora"), FEDORA, true));
    assert!(selects(Some("not linux-ubuntu"), FEDORA, true));
    // negation is cleared after the next token, matched or not
    assert!(selects(Some("not linux-ubuntu, linux"), FEDORA, false));
    assert!(!selects(Some("not linux-ubuntu, linux"), ESP32, false));
}

#[test]
fn not_then_a_later_positive_token_reenables() {
    assert!(selects(Some("not linux-fedora, linux"), FEDORA, true));
    assert!(selects(
        Some("none, not linux, linux-fedora-32/x86_64"),
        FEDORA,
        false
    ));
}

#[test]
fn first_positive_match_stops_the_scan() {
    assert!(selects(Some("linux, not linux-fedora"), FEDORA, false));
    assert!(selects(
        Some("none, linux-fedora, not linux-fedora"),
        FEDORA,
        false
    ));
}

#[test]
fn tuple_forms_in_lists() {
    assert!(selects(Some("none, linux//gcc"), FEDORA, true));
    assert!(!selects(Some("none, linux//llvm"), FEDORA, true));
    assert!(!selects(
        Some("none, linux/x86_64-amd/gcc/extra"),
        FEDORA,
        true
    ));
    assert!(selects(Some("none, linux-f"), FEDORA, true));
}
