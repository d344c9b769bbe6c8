//! The rules behind an interceptor's grade (`event::grade`): downstream, what the interceptor
//! gave the client (the version and suite it chose, its key exchange, the leaf it forged)
//! against what the client offered; upstream, what it offers the server in its own
//! ClientHello. Pure; a unit test per rule.

use tls_parser::{TlsCipherAu, TlsCipherEnc, TlsCipherEncMode, TlsCipherKx, TlsCipherMac};

use crate::{
    event::{
        Handshake, TlsVersion,
        grade::{GradeReason, InterceptorGrade},
    },
    tls::hello::is_grease,
};

/// The highest version the client offered: its supported_versions, else the ClientHello's
/// version (the first field of the JA3 string).
fn offered_max(hs: &Handshake) -> Option<TlsVersion> {
    let listed = hs.client_offer.as_ref().and_then(|o| {
        o.versions
            .iter()
            .filter(|v| !is_grease(**v))
            .filter_map(|v| TlsVersion::from_wire(*v))
            .max()
    });
    listed.or_else(|| {
        let legacy = hs.ja3_string.as_deref()?.split(',').next()?.parse().ok()?;
        TlsVersion::from_wire(legacy)
    })
}

/// Whether the client offered an AEAD suite; `None` when its offer is not known.
fn offered_aead(hs: &Handshake) -> Option<bool> {
    let offer = hs.client_offer.as_ref()?;
    Some(offer.cipher_suites.iter().any(|id| {
        tls_parser::TlsCipherSuite::from_id(*id).is_some_and(|s| s.mac == TlsCipherMac::Aead)
    }))
}

/// The grade of what an interceptor gave the client in `hs`. Only what the sensor saw counts:
/// without a ServerHello (no suite) the version and suite rules do not apply, without a leaf
/// the certificate rules do not.
pub fn downstream(hs: &Handshake) -> InterceptorGrade {
    let mut found = Vec::new();
    let suite = hs
        .cipher
        .as_deref()
        .and_then(tls_parser::TlsCipherSuite::from_name);
    if hs.cipher.is_some()
        && let Some(v) = hs.tls_version
    {
        match v {
            TlsVersion::Ssl3 => found.push(GradeReason::Ssl3),
            TlsVersion::Tls10 | TlsVersion::Tls11 => found.push(GradeReason::OldTlsVersion),
            TlsVersion::Tls12 | TlsVersion::Tls13 => {}
        }
        if offered_max(hs).is_some_and(|max| v < max) {
            found.push(GradeReason::VersionDowngrade);
        }
    }
    if let Some(s) = suite {
        if is_broken(s) {
            found.push(GradeReason::BrokenCipher);
        }
        if s.enc == TlsCipherEnc::TripleDes {
            found.push(GradeReason::TripleDes);
        }
        if is_cbc_sha1(s) {
            found.push(GradeReason::CbcSha1);
        }
        if !has_forward_secrecy(s) {
            found.push(GradeReason::NoForwardSecrecy);
        }
        if s.mac != TlsCipherMac::Aead && offered_aead(hs) == Some(true) {
            found.push(GradeReason::NoAead);
        }
    }
    if let Some(bits) = hs
        .key_exchange
        .as_deref()
        .and_then(|k| k.strip_prefix("dhe"))
        .and_then(|b| b.parse::<u32>().ok())
        && bits < 2048
    {
        found.push(GradeReason::WeakDh);
    }
    if let Some(leaf) = hs.chain.first() {
        let sig = leaf.signature_algorithm.to_ascii_lowercase();
        if sig.contains("md5") || sig.contains("md2") {
            found.push(GradeReason::Md5Signature);
        } else if sig.contains("sha1") || sig.contains("sha-1") {
            found.push(GradeReason::Sha1Signature);
        }
        match leaf.key_type.as_str() {
            "rsa" | "dsa" if leaf.key_bits > 0 && leaf.key_bits < 1024 => {
                found.push(GradeReason::TinyKey);
            }
            "rsa" | "dsa" if leaf.key_bits > 0 && leaf.key_bits < 2048 => {
                found.push(GradeReason::WeakKey);
            }
            "ec" if leaf.key_bits > 0 && leaf.key_bits < 224 => found.push(GradeReason::WeakKey),
            _ => {}
        }
    }
    InterceptorGrade::of(found)
}

fn is_broken(s: &tls_parser::TlsCipherSuite) -> bool {
    matches!(
        s.enc,
        TlsCipherEnc::Null | TlsCipherEnc::Rc4 | TlsCipherEnc::Rc2 | TlsCipherEnc::Des
    ) || s.au == TlsCipherAu::Null
        || s.kx == TlsCipherKx::Null
        || s.name.contains("EXPORT")
}

fn is_cbc_sha1(s: &tls_parser::TlsCipherSuite) -> bool {
    s.enc_mode == TlsCipherEncMode::Cbc && s.mac == TlsCipherMac::HmacSha1
}

fn has_forward_secrecy(s: &tls_parser::TlsCipherSuite) -> bool {
    matches!(
        s.kx,
        TlsCipherKx::Ecdhe | TlsCipherKx::Dhe | TlsCipherKx::Tls13 | TlsCipherKx::Null
    )
}

/// The grade of what an interceptor offers the server, from its ClientHello in `hs` (seen by
/// the server's sensor): F when it offers a broken suite at all (RC4, export, NULL, anonymous,
/// single DES) or SSL 3.0 at most; C when it offers 3DES, puts a CBC suite with SHA-1 first,
/// or offers TLS 1.1 at most; B when its first suite has no forward secrecy or is not AEAD.
/// F too when it went on with a server whose certificate does not validate
/// (`accepted_invalid`: the server's sensor knows its own chain). `None` without the offer.
pub fn upstream(hs: &Handshake, accepted_invalid: bool) -> Option<InterceptorGrade> {
    /// Signalling values, not suites: the renegotiation SCSV and the fallback SCSV.
    const SCSV: [u16; 2] = [0x00ff, 0x5600];
    let offer = hs.client_offer.as_ref()?;
    let mut found = Vec::new();
    let suites: Vec<&tls_parser::TlsCipherSuite> = offer
        .cipher_suites
        .iter()
        .filter(|id| !is_grease(**id) && !SCSV.contains(id))
        .filter_map(|id| tls_parser::TlsCipherSuite::from_id(*id))
        .collect();
    if suites.iter().any(|s| is_broken(s)) {
        found.push(GradeReason::BrokenCipher);
    }
    if suites.iter().any(|s| s.enc == TlsCipherEnc::TripleDes) {
        found.push(GradeReason::TripleDes);
    }
    if let Some(first) = suites.first() {
        if is_cbc_sha1(first) {
            found.push(GradeReason::CbcSha1);
        }
        if !has_forward_secrecy(first) {
            found.push(GradeReason::NoForwardSecrecy);
        }
        if first.mac != TlsCipherMac::Aead {
            found.push(GradeReason::NoAead);
        }
    }
    match offered_max(hs) {
        Some(TlsVersion::Ssl3) => found.push(GradeReason::Ssl3),
        Some(TlsVersion::Tls10 | TlsVersion::Tls11) => found.push(GradeReason::OldTlsVersion),
        _ => {}
    }
    if accepted_invalid {
        found.push(GradeReason::AcceptsInvalidCertificate);
    }
    Some(InterceptorGrade::of(found))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        event::{ClientOffer, grade::Grade},
        x509::CertSummary,
    };

    const ECDHE_RSA_AES128_GCM: u16 = 0xC02F;
    const ECDHE_RSA_AES128_CBC_SHA: u16 = 0xC013;

    /// A browser-like TLS 1.3 offer answered with TLS 1.3 and a sound leaf: an A.
    fn good() -> Handshake {
        Handshake {
            tls_version: Some(TlsVersion::Tls13),
            cipher: Some("TLS_AES_128_GCM_SHA256".into()),
            key_exchange: Some("x25519".into()),
            client_offer: Some(ClientOffer {
                cipher_suites: vec![0x1301, ECDHE_RSA_AES128_GCM, ECDHE_RSA_AES128_CBC_SHA],
                versions: vec![0x0a0a, 0x0304, 0x0303],
                ..ClientOffer::default()
            }),
            chain: vec![Arc::new(CertSummary {
                key_type: "rsa".into(),
                key_bits: 2048,
                signature_algorithm: "sha256WithRSAEncryption".into(),
                ..CertSummary::default()
            })],
            ..Handshake::default()
        }
    }

    fn grade(f: impl FnOnce(&mut Handshake)) -> InterceptorGrade {
        let mut hs = good();
        f(&mut hs);
        downstream(&hs)
    }

    fn tls12(hs: &mut Handshake, suite: &str) {
        hs.tls_version = Some(TlsVersion::Tls12);
        hs.cipher = Some(suite.into());
        if let Some(o) = &mut hs.client_offer {
            o.versions = vec![0x0303];
        }
    }

    /// An interceptor's own ClientHello offering `suites` (TLS 1.3 and 1.2).
    fn offering(suites: &[u16]) -> Option<InterceptorGrade> {
        upstream(
            &Handshake {
                client_offer: Some(ClientOffer {
                    cipher_suites: suites.to_vec(),
                    versions: vec![0x0304, 0x0303],
                    ..ClientOffer::default()
                }),
                ..Handshake::default()
            },
            false,
        )
    }

    #[test]
    fn upstream_a_browser_like_offer_is_an_a() {
        let g = offering(&[
            0x0a0a,
            0x1301,
            ECDHE_RSA_AES128_GCM,
            ECDHE_RSA_AES128_CBC_SHA,
            0x00ff,
        ]);
        assert_eq!(g.map(|g| g.grade), Some(Grade::A));
        assert_eq!(
            upstream(&Handshake::default(), true),
            None,
            "no offer, no grade"
        );
    }

    #[test]
    fn upstream_a_broken_suite_anywhere_is_an_f() {
        // TLS_RSA_WITH_RC4_128_SHA, last.
        let g = offering(&[0x1301, ECDHE_RSA_AES128_GCM, 0x0005]).unwrap();
        assert_eq!(g.grade, Grade::F);
        assert_eq!(g.reasons, [GradeReason::BrokenCipher]);
    }

    #[test]
    fn upstream_3des_anywhere_or_cbc_sha1_first_is_a_c() {
        // TLS_RSA_WITH_3DES_EDE_CBC_SHA, last.
        let g = offering(&[0x1301, ECDHE_RSA_AES128_GCM, 0x000a]).unwrap();
        assert_eq!(
            (g.grade, g.reasons.clone()),
            (Grade::C, vec![GradeReason::TripleDes])
        );
        let g = offering(&[ECDHE_RSA_AES128_CBC_SHA, ECDHE_RSA_AES128_GCM]).unwrap();
        assert_eq!(g.grade, Grade::C);
        assert!(g.reasons.contains(&GradeReason::CbcSha1), "{g:?}");
    }

    #[test]
    fn upstream_going_on_with_an_invalid_certificate_is_an_f() {
        let hs = Handshake {
            client_offer: Some(ClientOffer {
                cipher_suites: vec![0x1301, ECDHE_RSA_AES128_GCM],
                versions: vec![0x0304, 0x0303],
                ..ClientOffer::default()
            }),
            ..Handshake::default()
        };
        let g = upstream(&hs, true).unwrap();
        assert_eq!(
            (g.grade, g.reasons.clone()),
            (Grade::F, vec![GradeReason::AcceptsInvalidCertificate])
        );
        assert_eq!(upstream(&hs, false).unwrap().grade, Grade::A);
    }

    #[test]
    fn upstream_no_forward_secrecy_first_is_a_b() {
        // TLS_RSA_WITH_AES_128_GCM_SHA256 first.
        let g = offering(&[0x009c, ECDHE_RSA_AES128_GCM]).unwrap();
        assert_eq!(
            (g.grade, g.reasons.clone()),
            (Grade::B, vec![GradeReason::NoForwardSecrecy])
        );
    }

    #[test]
    fn upstream_tls_1_1_at_most_is_a_c() {
        let g = upstream(
            &Handshake {
                client_offer: Some(ClientOffer {
                    cipher_suites: vec![ECDHE_RSA_AES128_GCM],
                    ..ClientOffer::default()
                }),
                ja3_string: Some("770,49199,0,29,0".into()),
                ..Handshake::default()
            },
            false,
        )
        .unwrap();
        assert_eq!(
            (g.grade, g.reasons.clone()),
            (Grade::C, vec![GradeReason::OldTlsVersion])
        );
    }

    #[test]
    fn a_browser_grade_connection_is_an_a() {
        let g = downstream(&good());
        assert_eq!((g.grade, g.reasons.len()), (Grade::A, 0), "{g:?}");
        let g = grade(|h| tls12(h, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"));
        assert_eq!(g.grade, Grade::A, "{g:?}");
    }

    #[test]
    fn a_lower_version_than_offered_is_a_b() {
        let g = grade(|h| {
            h.tls_version = Some(TlsVersion::Tls12);
            h.cipher = Some("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into());
        });
        assert_eq!(g.grade, Grade::B);
        assert_eq!(g.reasons, [GradeReason::VersionDowngrade]);
        // Without supported_versions, the ClientHello's own version is the offer.
        let g = grade(|h| {
            tls12(h, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256");
            h.client_offer.as_mut().unwrap().versions.clear();
            h.ja3_string = Some("771,49199,0-11,29,0".into());
        });
        assert_eq!(g.grade, Grade::A, "{g:?}");
    }

    #[test]
    fn rsa_key_transport_has_no_forward_secrecy() {
        let g = grade(|h| tls12(h, "TLS_RSA_WITH_AES_128_GCM_SHA256"));
        assert_eq!(g.reasons, [GradeReason::NoForwardSecrecy]);
        assert_eq!(g.grade, Grade::B);
    }

    #[test]
    fn cbc_when_aead_was_offered_is_no_aead_and_sha1_cbc_a_c() {
        let g = grade(|h| tls12(h, "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256"));
        assert_eq!(g.reasons, [GradeReason::NoAead]);
        assert_eq!(g.grade, Grade::B);
        let g = grade(|h| tls12(h, "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"));
        assert_eq!(g.reasons, [GradeReason::CbcSha1, GradeReason::NoAead]);
        assert_eq!(g.grade, Grade::C);
        // A client that offered only CBC suites was not denied AEAD.
        let g = grade(|h| {
            tls12(h, "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256");
            h.client_offer.as_mut().unwrap().cipher_suites = vec![0xC027];
        });
        assert_eq!(g.grade, Grade::A, "{g:?}");
    }

    #[test]
    fn triple_des_is_a_c() {
        let g = grade(|h| tls12(h, "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA"));
        assert!(g.reasons.contains(&GradeReason::TripleDes), "{g:?}");
        assert_eq!(g.grade, Grade::C);
    }

    #[test]
    fn old_versions_are_a_c_and_ssl3_an_f() {
        let g = grade(|h| {
            tls12(h, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256");
            h.tls_version = Some(TlsVersion::Tls10);
        });
        assert!(g.reasons.contains(&GradeReason::OldTlsVersion), "{g:?}");
        assert_eq!(g.grade, Grade::C);
        let g = grade(|h| {
            tls12(h, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256");
            h.tls_version = Some(TlsVersion::Ssl3);
        });
        assert_eq!(g.grade, Grade::F);
        assert_eq!(g.reasons[0], GradeReason::Ssl3);
    }

    #[test]
    fn rc4_export_null_anonymous_and_des_are_broken() {
        for suite in [
            "TLS_RSA_WITH_RC4_128_SHA",
            "TLS_RSA_EXPORT_WITH_RC4_40_MD5",
            "TLS_RSA_WITH_NULL_SHA256",
            "TLS_DH_anon_WITH_AES_128_GCM_SHA256",
            "TLS_RSA_WITH_DES_CBC_SHA",
        ] {
            let g = grade(|h| tls12(h, suite));
            assert_eq!(g.grade, Grade::F, "{suite}: {g:?}");
            assert_eq!(g.reasons[0], GradeReason::BrokenCipher, "{suite}: {g:?}");
        }
    }

    #[test]
    fn short_finite_field_dh_is_a_c() {
        let g = grade(|h| {
            tls12(h, "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256");
            h.key_exchange = Some("dhe1024".into());
        });
        assert_eq!(g.reasons, [GradeReason::WeakDh]);
        let g = grade(|h| {
            tls12(h, "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256");
            h.key_exchange = Some("dhe2048".into());
        });
        assert_eq!(g.grade, Grade::A);
    }

    #[test]
    fn the_forged_leafs_signature_and_key() {
        let leaf = |sig: &str, key: &str, bits: u32| {
            grade(|h| {
                h.chain = vec![Arc::new(CertSummary {
                    key_type: key.into(),
                    key_bits: bits,
                    signature_algorithm: sig.into(),
                    ..CertSummary::default()
                })];
            })
        };
        let g = leaf("sha1WithRSAEncryption", "rsa", 2048);
        assert_eq!(
            (g.grade, g.reasons.clone()),
            (Grade::C, vec![GradeReason::Sha1Signature])
        );
        let g = leaf("md5WithRSAEncryption", "rsa", 2048);
        assert_eq!(
            (g.grade, g.reasons.clone()),
            (Grade::F, vec![GradeReason::Md5Signature])
        );
        let g = leaf("sha256WithRSAEncryption", "rsa", 1024);
        assert_eq!(
            (g.grade, g.reasons.clone()),
            (Grade::C, vec![GradeReason::WeakKey])
        );
        let g = leaf("sha256WithRSAEncryption", "rsa", 512);
        assert_eq!(
            (g.grade, g.reasons.clone()),
            (Grade::F, vec![GradeReason::TinyKey])
        );
        let g = leaf("ecdsa-with-SHA256", "ec", 256);
        assert_eq!(g.grade, Grade::A);
        let g = leaf("ecdsa-with-SHA256", "ec", 192);
        assert_eq!(g.reasons, [GradeReason::WeakKey]);
    }

    #[test]
    fn what_was_not_seen_is_not_graded() {
        // No ServerHello: the version is the client's own, and there is no suite.
        let g = grade(|h| {
            h.cipher = None;
            h.tls_version = Some(TlsVersion::Tls10);
            h.chain.clear();
        });
        assert_eq!(g.grade, Grade::A, "{g:?}");
    }
}
