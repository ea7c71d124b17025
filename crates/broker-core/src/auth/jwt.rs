//! JSON Web Tokens as passwords: the signature is checked with the configured key
//! (HS256: the shared secret; RS256 / ES256: the issuer's public key in PEM), `exp` is
//! required and checked (with `LEEWAY` for clock skew), `nbf` too when present, and the
//! username is the string in the configured claim.

use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::config::JwtAlgorithm;

/// Clock skew tolerated between the token's issuer and this node, in seconds.
pub const LEEWAY_SECS: u64 = 30;

/// Checks tokens against one key.
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
    claim: String,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithm", &self.validation.algorithms)
            .field("claim", &self.claim)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// Reads the key file; the error names the file.
    pub fn read(path: &Path, algorithm: JwtAlgorithm, claim: &str) -> Result<JwtVerifier, String> {
        let bytes =
            std::fs::read(path).map_err(|e| format!("jwt_key_file {}: {e}", path.display()))?;
        JwtVerifier::new(&bytes, algorithm, claim)
            .map_err(|e| format!("jwt_key_file {}: {e}", path.display()))
    }

    /// `key` is the secret (HS256; surrounding whitespace such as a final newline is
    /// not part of it) or a PEM public key (RS256, ES256).
    pub fn new(key: &[u8], algorithm: JwtAlgorithm, claim: &str) -> Result<JwtVerifier, String> {
        let (key, algorithm) = match algorithm {
            JwtAlgorithm::HS256 => {
                let secret = key.trim_ascii();
                if secret.is_empty() {
                    return Err("the HS256 secret is empty".into());
                }
                (DecodingKey::from_secret(secret), Algorithm::HS256)
            }
            JwtAlgorithm::RS256 => (
                DecodingKey::from_rsa_pem(key).map_err(|e| format!("RS256 public key: {e}"))?,
                Algorithm::RS256,
            ),
            JwtAlgorithm::ES256 => (
                DecodingKey::from_ec_pem(key).map_err(|e| format!("ES256 public key: {e}"))?,
                Algorithm::ES256,
            ),
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        // Audience and issuer are the token issuer's business: any key holder is trusted.
        validation.validate_aud = false;
        Ok(JwtVerifier {
            key,
            validation,
            claim: claim.to_string(),
        })
    }

    /// The username the token vouches for, or why it is not accepted.
    pub fn verify(&self, token: &str) -> Result<String, String> {
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(|e| e.to_string())?;
        match data.claims.get(&self.claim) {
            Some(Value::String(user)) if !user.is_empty() => Ok(user.clone()),
            _ => Err(format!("no string claim {:?}", self.claim)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn hs256(secret: &[u8], claims: Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    #[test]
    fn hs256_checks_signature_expiry_and_claim() {
        let v = JwtVerifier::new(b"s3cret\n", JwtAlgorithm::HS256, "sub").unwrap();
        let good = hs256(b"s3cret", json!({"sub": "dev-1", "exp": now() + 60}));
        assert_eq!(v.verify(&good).unwrap(), "dev-1");
        let forged = hs256(b"other", json!({"sub": "dev-1", "exp": now() + 60}));
        assert!(v.verify(&forged).unwrap_err().contains("Signature"));
        let expired = hs256(b"s3cret", json!({"sub": "dev-1", "exp": now() - 120}));
        assert!(v.verify(&expired).unwrap_err().contains("Expired"));
        let skewed = hs256(b"s3cret", json!({"sub": "dev-1", "exp": now() - 5}));
        assert!(v.verify(&skewed).is_ok(), "within the leeway");
        let no_exp = hs256(b"s3cret", json!({"sub": "dev-1"}));
        assert!(v.verify(&no_exp).is_err());
        let early = hs256(
            b"s3cret",
            json!({"sub": "d", "exp": now() + 600, "nbf": now() + 300}),
        );
        assert!(v.verify(&early).is_err(), "not valid before nbf");
        let no_sub = hs256(b"s3cret", json!({"name": "dev-1", "exp": now() + 60}));
        assert!(v.verify(&no_sub).unwrap_err().contains("\"sub\""));
        assert!(v.verify("not.a.token").is_err());
    }

    #[test]
    fn username_claim_is_configurable() {
        let v = JwtVerifier::new(b"k", JwtAlgorithm::HS256, "device").unwrap();
        let token = hs256(
            b"k",
            json!({"sub": "x", "device": "d-7", "exp": now() + 60}),
        );
        assert_eq!(v.verify(&token).unwrap(), "d-7");
    }

    #[test]
    fn algorithm_is_pinned() {
        // An HS256 verifier refuses a token that says it is signed otherwise.
        let v = JwtVerifier::new(b"k", JwtAlgorithm::HS256, "sub").unwrap();
        let mut header = Header::new(Algorithm::HS384);
        header.typ = Some("JWT".into());
        let token = encode(
            &header,
            &json!({"sub": "x", "exp": now() + 60}),
            &EncodingKey::from_secret(b"k"),
        )
        .unwrap();
        assert!(v.verify(&token).is_err());
    }

    #[test]
    fn rs256_with_a_pem_public_key() {
        let private = include_bytes!("../../../../tests/mqtt/keys/rs256-private.pem");
        let public = include_bytes!("../../../../tests/mqtt/keys/rs256-public.pem");
        let v = JwtVerifier::new(public, JwtAlgorithm::RS256, "sub").unwrap();
        let key = EncodingKey::from_rsa_pem(private).unwrap();
        let claims = json!({"sub": "rsa-user", "exp": now() + 60});
        let token = encode(&Header::new(Algorithm::RS256), &claims, &key).unwrap();
        assert_eq!(v.verify(&token).unwrap(), "rsa-user");
        // The ES256 key does not verify it, nor does an HS256 token "signed" with the
        // public key (the algorithm-confusion attack).
        let es = include_bytes!("../../../../tests/mqtt/keys/es256-public.pem");
        let other = JwtVerifier::new(es, JwtAlgorithm::ES256, "sub").unwrap();
        assert!(other.verify(&token).is_err());
        let confused = hs256(public, json!({"sub": "rsa-user", "exp": now() + 60}));
        assert!(v.verify(&confused).is_err());
    }

    #[test]
    fn es256_with_a_pem_public_key() {
        let private = include_bytes!("../../../../tests/mqtt/keys/es256-private.pem");
        let public = include_bytes!("../../../../tests/mqtt/keys/es256-public.pem");
        let v = JwtVerifier::new(public, JwtAlgorithm::ES256, "sub").unwrap();
        let key = EncodingKey::from_ec_pem(private).unwrap();
        let claims = json!({"sub": "ec-user", "exp": now() + 60});
        let token = encode(&Header::new(Algorithm::ES256), &claims, &key).unwrap();
        assert_eq!(v.verify(&token).unwrap(), "ec-user");
        assert!(JwtVerifier::new(b"not pem", JwtAlgorithm::ES256, "sub").is_err());
        assert!(JwtVerifier::new(b" \n", JwtAlgorithm::HS256, "sub").is_err());
    }
}
