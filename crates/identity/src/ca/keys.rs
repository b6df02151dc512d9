//! Reading a CA private key from PEM in the formats operators actually have.
//!
//! The signing library (rcgen on *ring*) takes PKCS#8 only, but Istio's plug-in CA
//! recipes run `openssl genrsa`, which writes PKCS#1 (`RSA PRIVATE KEY`) with
//! OpenSSL 1.x, and `openssl ecparam -genkey` writes SEC1 (`EC PRIVATE KEY`).
//! Both are wrapped here into PKCS#8 — a fixed DER envelope, no crypto involved.

use rcgen::KeyPair;
use rustls_pki_types::PrivatePkcs8KeyDer;

/// rsaEncryption (1.2.840.113549.1.1.1), as a DER OBJECT IDENTIFIER.
const OID_RSA_ENCRYPTION: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];
/// id-ecPublicKey (1.2.840.10045.2.1), as a DER OBJECT IDENTIFIER.
const OID_EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const TAG_SEQUENCE: u8 = 0x30;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_OID: u8 = 0x06;
/// `[0] EXPLICIT` (constructed): ECPrivateKey's `parameters` field.
const TAG_EC_PARAMETERS: u8 = 0xa0;
const PKCS8_VERSION_0: &[u8] = &[0x02, 0x01, 0x00];
const NULL: &[u8] = &[0x05, 0x00];

/// Parses the first private key block of `pem`. The error says what was found.
pub(super) fn key_from_pem(pem_text: &str) -> Result<KeyPair, String> {
    let blocks = pem::parse_many(pem_text).map_err(|e| format!("not valid PEM: {e}"))?;
    let block = blocks
        .iter()
        .find(|b| b.tag().ends_with("PRIVATE KEY"))
        .ok_or_else(|| "no PRIVATE KEY block".to_owned())?;
    let pkcs8 = match block.tag() {
        "PRIVATE KEY" => block.contents().to_vec(),
        "RSA PRIVATE KEY" => wrap_pkcs1(block.contents()),
        "EC PRIVATE KEY" => wrap_sec1(block.contents())?,
        "ENCRYPTED PRIVATE KEY" => {
            return Err("the key is encrypted; decrypt it first \
                 (openssl pkcs8 -topk8 -nocrypt)"
                .into());
        }
        other => return Err(format!("unsupported key block {other:?}")),
    };
    KeyPair::try_from(&PrivatePkcs8KeyDer::from(pkcs8)).map_err(|e| {
        format!(
            "{} key not usable (supported: ECDSA P-256/P-384, RSA 2048-8192 bits, Ed25519): {e}",
            block.tag()
        )
    })
}

fn wrap_pkcs1(pkcs1: &[u8]) -> Vec<u8> {
    let alg = tlv(TAG_SEQUENCE, &[OID_RSA_ENCRYPTION, NULL].concat());
    pkcs8(&alg, pkcs1)
}

fn wrap_sec1(sec1: &[u8]) -> Result<Vec<u8>, String> {
    let malformed = || "EC PRIVATE KEY is not a valid SEC1 ECPrivateKey".to_owned();
    let (tag, mut fields, rest) = read_tlv(sec1).ok_or_else(malformed)?;
    if tag != TAG_SEQUENCE || !rest.is_empty() {
        return Err(malformed());
    }
    // ECPrivateKey ::= SEQUENCE { version, privateKey, [0] parameters OPTIONAL, [1] publicKey OPTIONAL }
    let mut curve = None;
    while !fields.is_empty() {
        let (tag, content, rest) = read_tlv(fields).ok_or_else(malformed)?;
        if tag == TAG_EC_PARAMETERS {
            let (inner_tag, _, _) = read_tlv(content).ok_or_else(malformed)?;
            if inner_tag != TAG_OID {
                return Err(
                    "EC PRIVATE KEY uses explicit curve parameters; use a named curve".into(),
                );
            }
            curve = Some(content);
        }
        fields = rest;
    }
    let curve = curve.ok_or_else(|| "EC PRIVATE KEY does not name its curve".to_owned())?;
    let alg = tlv(TAG_SEQUENCE, &[OID_EC_PUBLIC_KEY, curve].concat());
    Ok(pkcs8(&alg, sec1))
}

/// PrivateKeyInfo ::= SEQUENCE { version 0, algorithm, privateKey OCTET STRING }
fn pkcs8(alg: &[u8], private_key: &[u8]) -> Vec<u8> {
    tlv(
        TAG_SEQUENCE,
        &[PKCS8_VERSION_0, alg, &tlv(TAG_OCTET_STRING, private_key)].concat(),
    )
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// One DER TLV: (tag, content, rest). `None` on truncation or an absurd length.
fn read_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |l, b| (l << 8) | usize::from(*b));
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::PublicKeyData;

    #[test]
    fn der_lengths_roundtrip() {
        for len in [0usize, 1, 127, 128, 255, 256, 70_000] {
            let content = vec![7u8; len];
            let encoded = tlv(TAG_SEQUENCE, &content);
            let (tag, got, rest) = read_tlv(&encoded).expect("parses");
            assert_eq!((tag, got.len(), rest.len()), (TAG_SEQUENCE, len, 0));
        }
        assert!(read_tlv(&[0x30, 0x05, 1, 2]).is_none(), "truncated");
        assert!(
            read_tlv(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_none(),
            "length of 5 bytes"
        );
    }

    #[test]
    fn sec1_key_is_wrapped_into_pkcs8() {
        // Take a PKCS#8 P-256 key apart to get its SEC1 body, as `openssl ecparam` would
        // write it (with the [0] curve parameters ring checks), and read it back.
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("generates");
        let der = key.serialize_der();
        let (_, info, _) = read_tlv(&der).expect("PrivateKeyInfo");
        let (_, _, info) = read_tlv(info).expect("version");
        let (_, alg, info) = read_tlv(info).expect("algorithm");
        let (_, sec1, _) = read_tlv(info).expect("privateKey");
        let (_, _, curve_tlv) = read_tlv(alg).expect("ecPublicKey oid");
        // Insert `[0] curve` after version and privateKey.
        let (_, fields, _) = read_tlv(sec1).expect("ECPrivateKey");
        let (_, _, after_version) = read_tlv(fields).expect("version");
        let (_, _, after_key) = read_tlv(after_version).expect("privateKey");
        let head = &fields[..fields.len() - after_key.len()];
        let with_params = tlv(
            TAG_SEQUENCE,
            &[head, &tlv(TAG_EC_PARAMETERS, curve_tlv), after_key].concat(),
        );
        let pem_text = pem::encode(&pem::Pem::new("EC PRIVATE KEY", with_params));
        let back = key_from_pem(&pem_text).expect("SEC1 key loads");
        assert_eq!(back.der_bytes(), key.der_bytes());
    }

    #[test]
    fn unusable_keys_say_why() {
        let enc = pem::encode(&pem::Pem::new("ENCRYPTED PRIVATE KEY", vec![1u8, 2]));
        assert!(
            key_from_pem(&enc)
                .expect_err("encrypted")
                .contains("encrypted")
        );
        let cert = pem::encode(&pem::Pem::new("CERTIFICATE", vec![1u8, 2]));
        assert!(
            key_from_pem(&cert)
                .expect_err("no key")
                .contains("no PRIVATE KEY")
        );
        let junk = pem::encode(&pem::Pem::new("RSA PRIVATE KEY", vec![1u8, 2]));
        assert!(
            key_from_pem(&junk)
                .expect_err("junk")
                .contains("not usable")
        );
    }
}
