//! AWS Signature Version 4, verified: memd recomputes the signature a client such as boto3
//! made with its secret access key and compares in constant time.
//!
//! The canonical request follows AWS's rules for every service but S3: the path as sent,
//! percent-encoded once more; query pairs decoded, re-encoded and sorted; the signed headers
//! with trimmed values; the SHA-256 of the body. See
//! <https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html>.

use super::errors::AwsError;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::{Digest, Sha256};

/// The signing name of both AgentCore services (data and control plane).
pub const SERVICE: &str = "bedrock-agentcore";
/// Requests signed further than this from the server's clock are refused (AWS's own bound).
pub const MAX_SKEW_SECONDS: i64 = 300;
const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Everything but RFC 3986's unreserved characters is encoded.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
/// The same for paths, whose separators stay.
const PATH: &AsciiSet = &UNRESERVED.remove(b'/');

/// The credential and signature an `Authorization: AWS4-HMAC-SHA256 ...` header carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Authorization {
    pub access_key_id: String,
    /// `YYYYMMDD` of the credential scope.
    pub date: String,
    pub region: String,
    pub service: String,
    /// Lowercase header names, as listed.
    pub signed_headers: Vec<String>,
    /// Lowercase hex.
    pub signature: String,
}

/// The parts of an HTTP request a signature covers.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    pub method: &'a str,
    /// The path exactly as sent (still percent-encoded).
    pub raw_path: &'a str,
    /// The query string as sent, without `?`.
    pub raw_query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

fn incomplete(message: impl Into<String>) -> AwsError {
    AwsError::new("IncompleteSignatureException", 400, message)
}

fn invalid(message: impl Into<String>) -> AwsError {
    AwsError::new("InvalidSignatureException", 403, message)
}

/// Parses an `Authorization` header value.
pub fn parse_authorization(value: &str) -> Result<Authorization, AwsError> {
    let rest = value
        .strip_prefix(ALGORITHM)
        .filter(|rest| rest.starts_with(' '))
        .ok_or_else(|| incomplete(format!("Authorization must use {ALGORITHM}")))?;
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (name, value) = part.trim().split_once('=').ok_or_else(|| {
            incomplete(format!(
                "Authorization component {part:?} is not name=value"
            ))
        })?;
        match name {
            "Credential" => credential = Some(value),
            "SignedHeaders" => signed_headers = Some(value),
            "Signature" => signature = Some(value),
            _ => {
                return Err(incomplete(format!(
                    "Authorization has an unknown component {name:?}"
                )));
            }
        }
    }
    let missing = |what: &str| incomplete(format!("Authorization is missing {what}"));
    let credential = credential.ok_or_else(|| missing("Credential"))?;
    let signed_headers = signed_headers.ok_or_else(|| missing("SignedHeaders"))?;
    let signature = signature.ok_or_else(|| missing("Signature"))?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key_id, date, region, service, terminator] = scope[..] else {
        return Err(incomplete(
            "Credential must read ACCESS_KEY_ID/YYYYMMDD/REGION/SERVICE/aws4_request",
        ));
    };
    if terminator != "aws4_request" || access_key_id.is_empty() || region.is_empty() {
        return Err(incomplete(
            "Credential must read ACCESS_KEY_ID/YYYYMMDD/REGION/SERVICE/aws4_request",
        ));
    }
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(incomplete("Signature must be 64 hex digits"));
    }
    Ok(Authorization {
        access_key_id: access_key_id.to_string(),
        date: date.to_string(),
        region: region.to_string(),
        service: service.to_string(),
        signed_headers: signed_headers.split(';').map(str::to_string).collect(),
        signature: signature.to_ascii_lowercase(),
    })
}

/// Checks `auth` against the request, the secret access key and the clock (`now_secs`,
/// Unix seconds): scope, freshness, then the signature itself.
pub fn verify(
    request: &SignedRequest<'_>,
    auth: &Authorization,
    secret: &str,
    now_secs: i64,
) -> Result<(), AwsError> {
    if auth.service != SERVICE {
        return Err(invalid(format!(
            "Credential should be scoped to service '{SERVICE}', not '{}'",
            auth.service
        )));
    }
    let amz_date = header(request.headers, "x-amz-date")
        .ok_or_else(|| incomplete("the X-Amz-Date header is missing"))?;
    let signed_at = chrono::NaiveDateTime::parse_from_str(amz_date, "%Y%m%dT%H%M%SZ")
        .map_err(|_| incomplete("X-Amz-Date must read YYYYMMDDTHHMMSSZ"))?
        .and_utc()
        .timestamp();
    if (now_secs - signed_at).abs() > MAX_SKEW_SECONDS {
        return Err(invalid(format!(
            "Signature expired: {amz_date} is more than 5 minutes from the server's time"
        )));
    }
    if !amz_date.starts_with(&auth.date) || auth.date.len() != 8 {
        return Err(invalid(
            "Credential should be scoped to the date of X-Amz-Date",
        ));
    }
    for required in ["host", "x-amz-date"] {
        if !auth.signed_headers.iter().any(|h| h == required) {
            return Err(invalid(format!("SignedHeaders must include {required}")));
        }
    }
    let body_sha256 = hex::encode(Sha256::digest(request.body));
    if let Some(claimed) = header(request.headers, "x-amz-content-sha256")
        && claimed != body_sha256
    {
        return Err(invalid("X-Amz-Content-Sha256 does not match the body"));
    }
    let canonical = canonical_request(request, &auth.signed_headers, &body_sha256)?;
    let scope = format!(
        "{}/{}/{}/aws4_request",
        auth.date, auth.region, auth.service
    );
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let mut key = hmac(format!("AWS4{secret}").as_bytes(), auth.date.as_bytes());
    for part in [auth.region.as_str(), auth.service.as_str(), "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let expected = hex::decode(&auth.signature).map_err(|_| incomplete("Signature must be hex"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes keys of any length");
    mac.update(string_to_sign.as_bytes());
    // Constant time: the comparison does not reveal how many leading bytes matched.
    mac.verify_slice(&expected).map_err(|_| {
        invalid("The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.")
    })
}

/// Signs a request as an AWS SDK does: sets `x-amz-date` and `authorization` in `headers`,
/// covering every header already there (which must include `host`). For memd's own
/// clients of the REST API (`memctl bench rest`) and tests; memd itself only verifies.
#[allow(clippy::too_many_arguments)]
pub fn sign(
    method: &str,
    raw_path: &str,
    raw_query: Option<&str>,
    headers: &mut HeaderMap,
    body: &[u8],
    access_key_id: &str,
    secret: &str,
    region: &str,
    unix_secs: i64,
) {
    let at = chrono::DateTime::from_timestamp(unix_secs, 0).unwrap_or_default();
    let amz_date = at.format("%Y%m%dT%H%M%SZ").to_string();
    let date = &amz_date[..8];
    headers.insert(
        "x-amz-date",
        http::HeaderValue::from_str(&amz_date).expect("ASCII date"),
    );
    let mut signed: Vec<String> = headers.keys().map(|k| k.as_str().to_string()).collect();
    signed.sort();
    signed.dedup();
    let request = SignedRequest {
        method,
        raw_path,
        raw_query,
        headers,
        body,
    };
    let canonical = canonical_request(&request, &signed, &hex::encode(Sha256::digest(body)))
        .expect("headers set by the caller are ASCII");
    let scope = format!("{date}/{region}/{SERVICE}/aws4_request");
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let mut key = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    for part in [region, SERVICE, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let signature = hex::encode(hmac(&key, string_to_sign.as_bytes()));
    let value = format!(
        "{ALGORITHM} Credential={access_key_id}/{scope}, SignedHeaders={}, Signature={signature}",
        signed.join(";")
    );
    headers.insert(
        "authorization",
        http::HeaderValue::from_str(&value).expect("ASCII authorization"),
    );
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The canonical request string the signature is computed over.
fn canonical_request(
    request: &SignedRequest<'_>,
    signed_headers: &[String],
    body_sha256: &str,
) -> Result<String, AwsError> {
    let path = if request.raw_path.is_empty() {
        "/"
    } else {
        request.raw_path
    };
    let canonical_uri = utf8_percent_encode(path, PATH).to_string();
    let mut pairs: Vec<(String, String)> = request
        .raw_query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (reencode(key), reencode(value))
        })
        .collect();
    pairs.sort();
    let canonical_query = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut canonical_headers = String::new();
    for name in signed_headers {
        let values: Vec<String> = request
            .headers
            .get_all(name.as_str())
            .iter()
            .map(|v| {
                v.to_str()
                    .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
                    .map_err(|_| invalid(format!("signed header {name} is not ASCII")))
            })
            .collect::<Result<_, _>>()?;
        if values.is_empty() {
            return Err(incomplete(format!(
                "signed header {name} is not in the request"
            )));
        }
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    Ok(format!(
        "{}\n{canonical_uri}\n{canonical_query}\n{canonical_headers}\n{}\n{body_sha256}",
        request.method,
        signed_headers.join(";")
    ))
}

fn reencode(component: &str) -> String {
    let decoded: Vec<u8> = percent_decode_str(component).collect();
    percent_encoding::percent_encode(&decoded, UNRESERVED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    /// AWS's published test vector "get-vanilla" (service "service", us-east-1).
    #[test]
    fn aws_test_suite_get_vanilla() {
        let headers = headers(&[
            ("host", "example.amazonaws.com"),
            ("x-amz-date", "20150830T123600Z"),
        ]);
        let request = SignedRequest {
            method: "GET",
            raw_path: "/",
            raw_query: None,
            headers: &headers,
            body: b"",
        };
        let auth = parse_authorization("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31").unwrap();
        let canonical = canonical_request(
            &request,
            &auth.signed_headers,
            &hex::encode(Sha256::digest(b"")),
        )
        .unwrap();
        assert_eq!(
            canonical,
            "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        // The vector is for another service name; check the arithmetic with the scope it has.
        let mut key = hmac(b"AWS4wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", b"20150830");
        for part in ["us-east-1", "service", "aws4_request"] {
            key = hmac(&key, part.as_bytes());
        }
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n{}",
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        assert_eq!(
            hex::encode(hmac(&key, string_to_sign.as_bytes())),
            auth.signature
        );
    }

    /// A ListSessions request for actor "acme/u1" (the '/' percent-encoded, as botocore sends
    /// it), signed by [`sign`]; botocore itself signs against a running memd in tests/python.
    #[test]
    fn signed_requests_verify_and_tampering_fails() {
        let mut headers = headers(&[
            ("host", "127.0.0.1:50052"),
            ("content-type", "application/json"),
        ]);
        let body = b"{}";
        let path = "/memories/support-abcdefghij/actor/acme%2Fu1/sessions";
        let signed_at = chrono::NaiveDate::from_ymd_opt(2026, 12, 4)
            .unwrap()
            .and_hms_opt(18, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp();
        let secret = "memd_kexample_secret";
        sign(
            "POST",
            path,
            None,
            &mut headers,
            body,
            "kexample",
            secret,
            "us-west-2",
            signed_at,
        );
        let request = SignedRequest {
            method: "POST",
            raw_path: path,
            raw_query: None,
            headers: &headers,
            body,
        };
        let auth = parse_authorization(headers["authorization"].to_str().unwrap()).unwrap();
        assert_eq!(auth.access_key_id, "kexample");
        assert_eq!(auth.signed_headers, ["content-type", "host", "x-amz-date"]);
        let now = signed_at + 60;
        verify(&request, &auth, secret, now).unwrap();
        // Another secret, another body, another path, a stale clock: all refused.
        assert!(verify(&request, &auth, "memd_kexample_secreT", now).is_err());
        let tampered = SignedRequest {
            body: b"[]",
            ..request
        };
        assert!(verify(&tampered, &auth, secret, now).is_err());
        let other_path = SignedRequest {
            raw_path: "/memories/support-abcdefghij/actor/globex%2Fu1/sessions",
            ..request
        };
        assert!(verify(&other_path, &auth, secret, now).is_err());
        let err = verify(&request, &auth, secret, signed_at + 400).unwrap_err();
        assert!(err.message.contains("expired"), "{}", err.message);
        let wrong_service = Authorization {
            service: "s3".into(),
            ..auth.clone()
        };
        assert!(verify(&request, &wrong_service, secret, now).is_err());
    }

    #[test]
    fn canonical_path_and_query_follow_aws_encoding() {
        let headers = headers(&[("host", "h"), ("x-amz-date", "20261204T180000Z")]);
        let request = SignedRequest {
            method: "GET",
            raw_path: "/memories/m-abcdefghij/memoryRecord/mem-x",
            raw_query: Some("namespace=%2Fusers%2Fa&b=c d"),
            headers: &headers,
            body: b"",
        };
        let canonical = canonical_request(&request, &["host".to_string()], "h").unwrap();
        let lines: Vec<&str> = canonical.lines().collect();
        assert_eq!(lines[2], "b=c%20d&namespace=%2Fusers%2Fa");
        let encoded = SignedRequest {
            raw_path: "/a/acme%2Fu1/s",
            ..request
        };
        let canonical = canonical_request(&encoded, &["host".to_string()], "h").unwrap();
        assert_eq!(canonical.lines().nth(1), Some("/a/acme%252Fu1/s"));
    }

    #[test]
    fn malformed_headers_are_incomplete() {
        for bad in [
            "Bearer x",
            "AWS4-HMAC-SHA256 Credential=a/b/c/d, SignedHeaders=host, Signature=00",
            "AWS4-HMAC-SHA256 SignedHeaders=host",
        ] {
            assert_eq!(
                parse_authorization(bad).unwrap_err().code,
                "IncompleteSignatureException"
            );
        }
    }
}
