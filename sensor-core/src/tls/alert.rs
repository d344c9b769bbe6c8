//! Alert descriptions (RFC 8446 section 6, plus the older ones of RFC 5246).

/// Descriptions by code, with their RFC names.
const DESCRIPTIONS: &[(u8, &str)] = &[
    (0, "close_notify"),
    (10, "unexpected_message"),
    (20, "bad_record_mac"),
    (21, "decryption_failed"),
    (22, "record_overflow"),
    (30, "decompression_failure"),
    (40, "handshake_failure"),
    (41, "no_certificate"),
    (42, "bad_certificate"),
    (43, "unsupported_certificate"),
    (44, "certificate_revoked"),
    (45, "certificate_expired"),
    (46, "certificate_unknown"),
    (47, "illegal_parameter"),
    (48, "unknown_ca"),
    (49, "access_denied"),
    (50, "decode_error"),
    (51, "decrypt_error"),
    (60, "export_restriction"),
    (70, "protocol_version"),
    (71, "insufficient_security"),
    (80, "internal_error"),
    (86, "inappropriate_fallback"),
    (90, "user_canceled"),
    (100, "no_renegotiation"),
    (109, "missing_extension"),
    (110, "unsupported_extension"),
    (111, "certificate_unobtainable"),
    (112, "unrecognized_name"),
    (113, "bad_certificate_status_response"),
    (114, "bad_certificate_hash_value"),
    (115, "unknown_psk_identity"),
    (116, "certificate_required"),
    (120, "no_application_protocol"),
];

/// The RFC name of an alert description, such as `unknown_ca` for 48; `unknown` for a code
/// no RFC names.
pub fn description_name(code: u8) -> &'static str {
    DESCRIPTIONS
        .iter()
        .find(|(c, _)| *c == code)
        .map_or("unknown", |(_, name)| name)
}

/// A description code no RFC assigns: what a `client_rejected:unknown` read back stands for.
pub const UNNAMED: u8 = 255;

/// The code of an RFC description name.
pub fn description_code(name: &str) -> Option<u8> {
    DESCRIPTIONS
        .iter()
        .find(|(_, n)| *n == name)
        .map(|(code, _)| *code)
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_and_codes() {
        assert_eq!(super::description_name(48), "unknown_ca");
        assert_eq!(super::description_name(42), "bad_certificate");
        assert_eq!(super::description_name(7), "unknown");
        assert_eq!(super::description_code("unknown_ca"), Some(48));
        assert_eq!(super::description_code("unknown"), None);
    }
}
