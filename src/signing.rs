//! Gemini's request signing: base64 of the JSON payload, HMAC-SHA384 over that base64 text.
//!
//! The client signs with it and the simulator verifies with it. Because both sides share this one
//! primitive, the published test vectors (tested below) are what keeps them honest.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha384;

type HmacSha384 = Hmac<Sha384>;

/// Headers of one signed private call: the base64 payload and its hex signature.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedPayload {
    pub payload_b64: String,
    pub signature_hex: String,
}

/// Encodes the exact payload bytes and signs the encoded text with the secret.
pub fn sign(secret: &[u8], payload_json: &[u8]) -> SignedPayload {
    let payload_b64 = base64::engine::general_purpose::STANDARD.encode(payload_json);
    let signature_hex = signature_of(secret, payload_b64.as_bytes());
    SignedPayload {
        payload_b64,
        signature_hex,
    }
}

/// Lower-case hex HMAC-SHA384 of the base64 header value as it travels.
pub fn signature_of(secret: &[u8], payload_b64: &[u8]) -> String {
    hex::encode(mac_over(secret, payload_b64).finalize().into_bytes())
}

/// True when `signature_hex` is the signature of `payload_b64` under `secret`.
/// The comparison is constant-time so a caller cannot learn a signature byte by byte.
pub fn verify(secret: &[u8], payload_b64: &[u8], signature_hex: &str) -> bool {
    let Ok(claimed) = hex::decode(signature_hex) else {
        return false;
    };
    mac_over(secret, payload_b64).verify_slice(&claimed).is_ok()
}

fn mac_over(secret: &[u8], message: &[u8]) -> HmacSha384 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha384::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(message);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The three vectors of docs/gemini-api.md §1: (secret, payload, base64, signature).
    pub(crate) const VECTORS: [(&str, &str, &str, &str); 3] = [
        (
            "1234abcd",
            "{\n    \"request\": \"/v1/order/status\",\n    \"nonce\": 123456,\n\n    \"order_id\": 18834\n}\n",
            "ewogICAgInJlcXVlc3QiOiAiL3YxL29yZGVyL3N0YXR1cyIsCiAgICAibm9uY2UiOiAxMjM0NTYsCgogICAgIm9yZGVyX2lkIjogMTg4MzQKfQo=",
            "337cc8b4ea692cfe65b4a85fcc9f042b2e3f702ac956fd098d600ab15705775017beae402be773ceee10719ff70d710f",
        ),
        (
            "1234abcd",
            r#"{"request":"/v1/order/cancel/all","nonce":1700000000000,"account":"sub1"}"#,
            "eyJyZXF1ZXN0IjoiL3YxL29yZGVyL2NhbmNlbC9hbGwiLCJub25jZSI6MTcwMDAwMDAwMDAwMCwiYWNjb3VudCI6InN1YjEifQ==",
            "f8063edb9471ea7eb9bad611914e8f2d8045b012e9f3367b2affec7c4897060efa8ad02b3645925c7243382c8ca314a6",
        ),
        (
            "1234abcd",
            r#"{"request":"/v1/order/cancel/all","nonce":"1700000000000","account":"sub1"}"#,
            "eyJyZXF1ZXN0IjoiL3YxL29yZGVyL2NhbmNlbC9hbGwiLCJub25jZSI6IjE3MDAwMDAwMDAwMDAiLCJhY2NvdW50Ijoic3ViMSJ9",
            "b71b3377f8761f5b528f8f94036b7dbec4694f15f2cc0fdc57b5810713f39c8f914fbcabb30de2f139ae6a818054106b",
        ),
    ];

    #[test]
    fn signing_reproduces_the_published_vectors() {
        for (secret, payload, b64, sig) in VECTORS {
            let signed = sign(secret.as_bytes(), payload.as_bytes());
            assert_eq!(signed.payload_b64, b64, "base64 of {payload:?}");
            assert_eq!(signed.signature_hex, sig, "signature of {payload:?}");
        }
    }

    #[test]
    fn verification_accepts_the_vectors_and_refuses_any_changed_byte() {
        for (secret, _, b64, sig) in VECTORS {
            assert!(verify(secret.as_bytes(), b64.as_bytes(), sig));

            let mut wrong_secret = secret.as_bytes().to_vec();
            wrong_secret[0] ^= 1;
            assert!(!verify(&wrong_secret, b64.as_bytes(), sig));

            let mut wrong_payload = b64.as_bytes().to_vec();
            wrong_payload[5] ^= 1;
            assert!(!verify(secret.as_bytes(), &wrong_payload, sig));

            let mut wrong_sig = sig.as_bytes().to_vec();
            wrong_sig[0] = if wrong_sig[0] == b'0' { b'1' } else { b'0' };
            let wrong_sig = String::from_utf8(wrong_sig).unwrap();
            assert!(!verify(secret.as_bytes(), b64.as_bytes(), &wrong_sig));
        }
    }

    #[test]
    fn verification_refuses_non_hex_signatures() {
        let (secret, _, b64, _) = VECTORS[1];
        assert!(!verify(secret.as_bytes(), b64.as_bytes(), "not hex"));
        assert!(!verify(secret.as_bytes(), b64.as_bytes(), ""));
    }
}
