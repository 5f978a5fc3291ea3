//! Certificate upload checks: `Certificate::parse` (PEM chain + PEM key,
//! X.509 parsing, key match) and, for what parses, `covers` / `check_for`,
//! which the control plane runs on `PUT /v1/certificates/{hostname}`.
//!
//! Modes, picked by the first input byte:
//! - 0: raw bytes, split into chain and key at a fuzzer-chosen point;
//! - 1: fuzzer bytes inside `CERTIFICATE` armour as they are (PEM decoder);
//! - 2: fuzzer bytes base64-encoded inside the armour (X.509 parser on
//!   arbitrary DER), with a valid key;
//! - 3: a valid self-signed certificate's DER with fuzzer edits, with its
//!   own key (reaches deep into the X.509 parser and the key match).
//!
//! - 4: the SNI table (`CertTable`): the input's lines are hostnames
//!   installed and removed in turn, the last one is a client's server name.
//!
//! Properties: nothing panics; a certificate that parses names at least
//! one DNS name, covers each of its non-wildcard names, and `check_for`
//! agrees with `covers` and its validity window; an SNI lookup finds the
//! exact entry for the name (case and trailing dots aside), else the
//! wildcard for its parent domain, as a naive model does.

#![no_main]

use std::sync::LazyLock;

use std::collections::HashSet;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use outpost_edge_node::tls::{CertTable, Certificate, Installed};

/// A valid chain's DER and key PEM for the structured modes.
static VALID: LazyLock<(Vec<u8>, String)> = LazyLock::new(|| {
    let (_, chain, key) =
        Certificate::self_signed(&["fuzz.example.com", "*.fuzz.example.com"]).expect("rcgen");
    (pem_body(&chain), key)
});

fn pem_body(pem: &str) -> Vec<u8> {
    let b64: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    decode_base64(&b64)
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn decode_base64(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c).expect("base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

fn encode_base64(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk.len();
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let v = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= n {
                out.push(ALPHABET[(v >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn armour(label: &str, body: &[u8]) -> Vec<u8> {
    let mut pem = format!("-----BEGIN {label}-----\n").into_bytes();
    pem.extend_from_slice(body);
    pem.extend_from_slice(format!("\n-----END {label}-----\n").as_bytes());
    pem
}

fn armour_der(der: &[u8]) -> Vec<u8> {
    let b64 = encode_base64(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|l| std::str::from_utf8(l).expect("ascii"))
        .collect();
    armour("CERTIFICATE", lines.join("\n").as_bytes())
}

/// Edits `[op, pos_hi, pos_lo, byte]` as in `module_validate`.
fn mutate(base: &[u8], edits: &[u8]) -> Vec<u8> {
    let mut out = base.to_vec();
    for edit in edits.chunks_exact(4) {
        let pos = usize::from(u16::from_be_bytes([edit[1], edit[2]]));
        let at = pos * (out.len() + 1) / 65_536;
        match edit[0] % 4 {
            0 if at < out.len() => out[at] ^= edit[3] | 1,
            1 => out.insert(at, edit[3]),
            2 if at < out.len() => {
                out.remove(at);
            }
            3 if at < out.len() => out[at] = edit[3],
            _ => {}
        }
    }
    out
}

fn check(chain: &[u8], key: &[u8], host: &str) {
    let Ok(cert) = Certificate::parse(chain, key) else {
        return;
    };
    assert!(
        !cert.names().is_empty(),
        "a parsed certificate names a host"
    );
    // The window checks run at realistic times: now, and each edge.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    for name in cert.names() {
        if !name.starts_with("*.") {
            assert!(cert.covers(name), "{name} not covered by its own cert");
        }
    }
    for t in [
        now,
        cert.not_before(),
        cert.not_before().saturating_sub(1),
        cert.not_after(),
        cert.not_after().saturating_sub(1),
    ] {
        let ok = cert.check_for(host, t).is_ok();
        let want = model_covers(cert.names(), host)
            && cert.not_before() <= t
            && t < cert.not_after();
        assert_eq!(ok, want, "check_for({host:?}, {t}) disagrees");
    }
}

/// Which hostnames a certificate's names cover, written from the rule
/// (RFC 6125 §6.4.3, as browsers apply it) and not from
/// `Certificate::covers`, so the two can disagree: compare label by label,
/// ASCII case and trailing dots aside; `*` stands for exactly one
/// non-empty leftmost label, only as a whole label, and only with a parent
/// domain after it.
fn model_covers(names: &[String], host: &str) -> bool {
    fn labels(name: &str) -> Vec<String> {
        let mut out: Vec<String> = name.split('.').map(|l| l.to_ascii_lowercase()).collect();
        while out.last().is_some_and(String::is_empty) {
            out.pop();
        }
        out
    }
    let host = labels(host);
    names.iter().any(|name| {
        let name = labels(name);
        if name == host {
            return true;
        }
        // A wildcard needs a parent: a bare `*` covers nothing.
        name.len() >= 2
            && name[0] == "*"
            && name.len() == host.len()
            && host.first().is_some_and(|l| !l.is_empty())
            && name[1..] == host[1..]
    })
}

/// Installs and removes the input's hostnames in turn, then looks the last
/// line up as a TLS server name and compares with a model.
fn sni(input: &[u8]) {
    static CERT: LazyLock<Arc<Certificate>> = LazyLock::new(|| {
        Arc::new(
            Certificate::self_signed(&["fuzz.example.com"])
                .expect("rcgen")
                .0,
        )
    });
    let text = String::from_utf8_lossy(input);
    let mut lines: Vec<&str> = text.split('\n').collect();
    let server_name = lines.pop().unwrap_or("");
    let mut table = CertTable::default();
    let (mut exact, mut wildcard) = (HashSet::new(), HashSet::new());
    for (i, host) in lines.iter().enumerate() {
        let lower = host.to_ascii_lowercase();
        let set = match lower.strip_prefix("*.") {
            Some(parent) => (&mut wildcard, parent.to_string()),
            None => (&mut exact, lower.clone()),
        };
        if i % 3 == 2 {
            table.remove(host);
            set.0.remove(&set.1);
        } else {
            let tenant = format!("t{i}");
            let cert = Arc::clone(&CERT);
            table.insert(host, Installed { tenant, cert });
            set.0.insert(set.1);
        }
    }
    assert_eq!(table.len(), exact.len() + wildcard.len());
    let name = server_name.trim_end_matches('.').to_ascii_lowercase();
    let want = if exact.contains(&name) {
        Some(true)
    } else {
        name.split_once('.')
            .filter(|(_, parent)| wildcard.contains(*parent))
            .map(|_| false)
    };
    let got = table.lookup(server_name).map(|(_, is_exact)| is_exact);
    assert_eq!(got, want, "SNI lookup of {server_name:?}");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    // The hostname checked against comes from the input's tail, up to a NUL.
    let (rest, host) = match rest.iter().rposition(|&b| b == 0) {
        Some(i) => (
            &rest[..i],
            String::from_utf8_lossy(&rest[i + 1..]).into_owned(),
        ),
        None => (rest, "fuzz.example.com".to_string()),
    };
    let (valid_der, valid_key) = &*VALID;
    if mode % 5 == 4 {
        sni(rest);
        return;
    }
    match mode % 5 {
        0 => {
            let split = rest
                .first()
                .map_or(0, |&b| usize::from(b) * rest.len() / 256);
            let (chain, key) = rest.split_at(split);
            check(chain, key, &host);
        }
        1 => check(&armour("CERTIFICATE", rest), valid_key.as_bytes(), &host),
        2 => check(&armour_der(rest), valid_key.as_bytes(), &host),
        _ => check(
            &armour_der(&mutate(valid_der, rest)),
            valid_key.as_bytes(),
            &host,
        ),
    }
});
