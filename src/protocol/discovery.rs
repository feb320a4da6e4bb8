//! Discovery metadata rewrite (OpenID Connect Discovery, RFC 8414). Pure.
//!
//! Clients that discover their authorization server should learn the client authentication
//! methods the gateway accepts (it converts between Basic and POST, so it accepts both even when
//! the upstream accepts one) and the gateway's URLs for the endpoints it fronts. Everything else
//! passes unchanged: members are kept in their order, and every value not rewritten keeps its
//! exact bytes (only the whitespace between members is dropped).

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::method::{AuthMethod, Conversion};

/// Members holding the URL of an endpoint that authenticates clients.
pub const ENDPOINT_KEYS: [&str; 5] = [
    "token_endpoint",
    "introspection_endpoint",
    "revocation_endpoint",
    "pushed_authorization_request_endpoint",
    "device_authorization_endpoint",
];

/// Members listing client authentication methods, with the endpoint each describes. PAR and
/// device authorization use the token endpoint's list (RFC 9126 §5, RFC 8628 §4).
pub const METHOD_KEYS: [(&str, &str); 3] = [
    ("token_endpoint_auth_methods_supported", "token_endpoint"),
    (
        "introspection_endpoint_auth_methods_supported",
        "introspection_endpoint",
    ),
    (
        "revocation_endpoint_auth_methods_supported",
        "revocation_endpoint",
    ),
];

/// What to rewrite.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiscoveryRewrite {
    /// Replaces `scheme://host[:port]` of the endpoint URLs in [`ENDPOINT_KEYS`] (keeping their
    /// path and query); may carry a path prefix; no trailing `/`. `None`: URLs unchanged.
    pub public_base_url: Option<String>,
    /// The methods to advertise. `None`: the upstream's list plus the methods the gateway
    /// converts between (a converting route accepts both whatever the upstream takes).
    pub auth_methods: Option<Vec<AuthMethod>>,
}

/// The body was not a JSON object; it is passed on unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotMetadata;

/// A JSON object's members in order, values as their raw text.
struct Members(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Members, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(32));
                while let Some(entry) = map.next_entry::<String, Box<RawValue>>()? {
                    members.push(entry);
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(V)
    }
}

/// Rewrites a metadata document.
pub fn rewrite(body: &[u8], rules: &DiscoveryRewrite) -> Result<Vec<u8>, NotMetadata> {
    let Members(mut members) = serde_json::from_slice(body).map_err(|_| NotMetadata)?;

    if let Some(base) = &rules.public_base_url {
        for (key, value) in members.iter_mut() {
            if !ENDPOINT_KEYS.contains(&key.as_str()) {
                continue;
            }
            let Ok(url) = serde_json::from_str::<String>(value.get()) else {
                continue;
            };
            if let Some(path) = path_and_query(&url) {
                *value = json(&format!("{base}{path}"));
            }
        }
    }

    for (list_key, endpoint_key) in METHOD_KEYS {
        let has_endpoint = members.iter().any(|(k, _)| k == endpoint_key);
        let existing = members.iter_mut().find(|(k, _)| k == list_key);
        let upstream_list: Vec<String> = existing
            .as_ref()
            .and_then(|(_, v)| serde_json::from_str::<Vec<serde_json::Value>>(v.get()).ok())
            .map(|l| {
                l.into_iter()
                    .filter_map(|m| m.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let methods = match &rules.auth_methods {
            Some(configured) => configured.iter().map(|m| m.as_str().to_string()).collect(),
            None => {
                let mut l = upstream_list;
                for m in Conversion::ALL.map(Conversion::target) {
                    if !l.iter().any(|x| x == m.as_str()) {
                        l.push(m.as_str().to_string());
                    }
                }
                l
            }
        };
        let value = json(&methods);
        match existing {
            Some((_, v)) => *v = value,
            // The token endpoint's list defaults to Basic alone (RFC 8414 §2), which would hide
            // POST; the others are added when the server has that endpoint.
            None if list_key == METHOD_KEYS[0].0 || has_endpoint => {
                members.push((list_key.to_string(), value))
            }
            None => {}
        }
    }

    let mut out = Vec::with_capacity(body.len() + 64);
    out.push(b'{');
    for (i, (key, value)) in members.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(json(key).get().as_bytes());
        out.push(b':');
        out.extend_from_slice(value.get().as_bytes());
    }
    out.push(b'}');
    Ok(out)
}

/// Largest metadata document rewritten; a longer one passes unchanged.
pub const MAX_METADATA_BYTES: usize = 1 << 20;

/// Whether an answer is a metadata document to rewrite: a `200` to a `GET`, JSON, not
/// content-encoded. Everything else (errors, `304`, `HEAD`, compressed bodies) passes unchanged.
pub fn is_rewritable(
    request_method: &[u8],
    status: u16,
    content_type: Option<&[u8]>,
    content_encoding: Option<&[u8]>,
) -> bool {
    let json = content_type.is_some_and(|ct| {
        let essence = ct.split(|b| *b == b';').next().unwrap_or_default();
        let essence = essence.trim_ascii();
        essence.eq_ignore_ascii_case(b"application/json")
            || (essence.len() > 5 && essence[essence.len() - 5..].eq_ignore_ascii_case(b"+json"))
    });
    let identity =
        content_encoding.is_none_or(|e| e.trim_ascii().eq_ignore_ascii_case(b"identity"));
    request_method == b"GET" && status == 200 && json && identity
}

/// A response body on its way to the client: buffered whole, then rewritten. A body over
/// [`MAX_METADATA_BYTES`] is let through unchanged from that point on; one that is not a JSON
/// object is sent unchanged.
#[derive(Debug)]
pub struct BodyRewriter {
    rules: std::sync::Arc<DiscoveryRewrite>,
    buffered: Vec<u8>,
    passing: bool,
}

/// What became of a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Rewritten,
    /// Not a JSON object, or too large: sent as received.
    Unchanged,
}

impl BodyRewriter {
    pub fn new(rules: std::sync::Arc<DiscoveryRewrite>) -> BodyRewriter {
        BodyRewriter {
            rules,
            buffered: Vec::new(),
            passing: false,
        }
    }

    /// Takes the next piece of the body; returns what to send now (nothing until the end, unless
    /// the body turned out too large), and at the end what became of it.
    pub fn push(&mut self, chunk: &[u8], end: bool) -> (Vec<u8>, Option<Outcome>) {
        if self.passing {
            return (chunk.to_vec(), end.then_some(Outcome::Unchanged));
        }
        self.buffered.extend_from_slice(chunk);
        if self.buffered.len() > MAX_METADATA_BYTES {
            self.passing = true;
            return (
                std::mem::take(&mut self.buffered),
                end.then_some(Outcome::Unchanged),
            );
        }
        if !end {
            return (Vec::new(), None);
        }
        let body = std::mem::take(&mut self.buffered);
        match rewrite(&body, &self.rules) {
            Ok(out) => (out, Some(Outcome::Rewritten)),
            Err(NotMetadata) => (body, Some(Outcome::Unchanged)),
        }
    }
}

fn json<T: serde::Serialize + ?Sized>(v: &T) -> Box<RawValue> {
    // Strings and lists of strings always serialize.
    serde_json::value::to_raw_value(v).expect("serializable")
}

/// The path and query of an absolute `http(s)` URL (`""` when it has none); `None` otherwise.
fn path_and_query(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let cut = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if cut == 0 {
        return None;
    }
    Some(&rest[cut..])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    const PINGONE: &str = r#"{
  "issuer" : "https://auth.pingone.com/env-1/as",
  "authorization_endpoint" : "https://auth.pingone.com/env-1/as/authorize",
  "pushed_authorization_request_endpoint" : "https://auth.pingone.com/env-1/as/par",
  "token_endpoint" : "https://auth.pingone.com/env-1/as/token",
  "userinfo_endpoint" : "https://auth.pingone.com/env-1/as/userinfo",
  "jwks_uri" : "https://auth.pingone.com/env-1/as/jwks",
  "introspection_endpoint" : "https://auth.pingone.com/env-1/as/introspect",
  "revocation_endpoint" : "https://auth.pingone.com/env-1/as/revoke",
  "device_authorization_endpoint" : "https://auth.pingone.com/env-1/as/device_authorization",
  "scopes_supported" : [ "openid", "profile" ],
  "token_endpoint_auth_methods_supported" : [ "client_secret_basic", "private_key_jwt" ],
  "request_object_signing_alg_values_supported" : [ "none", "HS256" ],
  "claims_parameter_supported" : false,
  "x_number" : 1.50,
  "x_escaped" : "caf\u00e9"
}"#;

    fn rules(base: Option<&str>, methods: Option<&[&str]>) -> DiscoveryRewrite {
        DiscoveryRewrite {
            public_base_url: base.map(str::to_string),
            auth_methods: methods
                .map(|m| m.iter().map(|s| AuthMethod::parse(s).unwrap()).collect()),
        }
    }

    fn parse(b: &[u8]) -> serde_json::Map<String, Value> {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn endpoint_urls_move_to_the_gateway_and_the_rest_stays() {
        let out = rewrite(
            PINGONE.as_bytes(),
            &rules(Some("https://gw.example.com"), None),
        )
        .unwrap();
        let m = parse(&out);
        assert_eq!(m["token_endpoint"], "https://gw.example.com/env-1/as/token");
        assert_eq!(
            m["introspection_endpoint"],
            "https://gw.example.com/env-1/as/introspect"
        );
        assert_eq!(
            m["revocation_endpoint"],
            "https://gw.example.com/env-1/as/revoke"
        );
        assert_eq!(
            m["pushed_authorization_request_endpoint"],
            "https://gw.example.com/env-1/as/par"
        );
        assert_eq!(
            m["device_authorization_endpoint"],
            "https://gw.example.com/env-1/as/device_authorization"
        );
        // The issuer must stay: tokens carry it, and clients compare it.
        assert_eq!(m["issuer"], "https://auth.pingone.com/env-1/as");
        assert_eq!(
            m["authorization_endpoint"],
            "https://auth.pingone.com/env-1/as/authorize"
        );
        assert_eq!(m["jwks_uri"], "https://auth.pingone.com/env-1/as/jwks");
        // Untouched values keep their exact bytes.
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(r#""x_number":1.50"#), "{text}");
        assert!(text.contains(r#""x_escaped":"caf\u00e9""#), "{text}");
        assert!(
            text.contains(r#""scopes_supported":[ "openid", "profile" ]"#),
            "{text}"
        );
        // Members keep their order.
        let keys = |b: &[u8]| -> Vec<String> {
            let Members(m) = serde_json::from_slice(b).unwrap();
            m.into_iter().map(|(k, _)| k).collect()
        };
        let (now, original) = (keys(text.as_bytes()), keys(PINGONE.as_bytes()));
        assert_eq!(now[..original.len()], original[..]);
    }

    #[test]
    fn default_methods_add_basic_and_post_to_the_upstreams() {
        let out = rewrite(PINGONE.as_bytes(), &rules(None, None)).unwrap();
        let m = parse(&out);
        assert_eq!(
            m["token_endpoint_auth_methods_supported"],
            serde_json::json!([
                "client_secret_basic",
                "private_key_jwt",
                "client_secret_post"
            ])
        );
        // The server has both endpoints but did not list their methods: now they are listed.
        assert_eq!(
            m["introspection_endpoint_auth_methods_supported"],
            serde_json::json!(["client_secret_basic", "client_secret_post"])
        );
        assert_eq!(
            m["revocation_endpoint_auth_methods_supported"],
            m["introspection_endpoint_auth_methods_supported"]
        );
        // Without a base URL the endpoints stay.
        assert_eq!(
            m["token_endpoint"],
            "https://auth.pingone.com/env-1/as/token"
        );
    }

    #[test]
    fn configured_methods_replace_every_list() {
        let body = br#"{"token_endpoint":"http://a/t","introspection_endpoint_auth_methods_supported":["private_key_jwt"]}"#;
        let out = rewrite(body, &rules(None, Some(&["client_secret_post"]))).unwrap();
        let m = parse(&out);
        assert_eq!(
            m["token_endpoint_auth_methods_supported"],
            serde_json::json!(["client_secret_post"])
        );
        assert_eq!(
            m["introspection_endpoint_auth_methods_supported"],
            serde_json::json!(["client_secret_post"])
        );
        // No revocation endpoint: no revocation list is invented.
        assert!(!m.contains_key("revocation_endpoint_auth_methods_supported"));
    }

    #[test]
    fn base_url_with_a_path_and_urls_with_queries() {
        let body = br#"{"token_endpoint":"https://idp:8443/t?x=1","revocation_endpoint":"https://idp","introspection_endpoint":"urn:not-a-url","device_authorization_endpoint":42}"#;
        let out = rewrite(body, &rules(Some("https://gw/idp"), None)).unwrap();
        let m = parse(&out);
        assert_eq!(m["token_endpoint"], "https://gw/idp/t?x=1");
        assert_eq!(m["revocation_endpoint"], "https://gw/idp");
        assert_eq!(m["introspection_endpoint"], "urn:not-a-url");
        assert_eq!(m["device_authorization_endpoint"], 42);
    }

    #[test]
    fn anything_but_an_object_is_not_metadata() {
        for body in [
            &b""[..],
            b"[]",
            b"\"x\"",
            b"{",
            b"{\"a\":}",
            b"null",
            b"<html>",
        ] {
            assert_eq!(
                rewrite(body, &rules(None, None)),
                Err(NotMetadata),
                "{body:?}"
            );
        }
        assert!(rewrite(b" { } ", &rules(None, None)).is_ok());
    }

    #[test]
    fn a_method_list_of_another_shape_is_replaced_by_the_gateways() {
        let body = br#"{"token_endpoint_auth_methods_supported":"client_secret_basic"}"#;
        let m = parse(&rewrite(body, &rules(None, None)).unwrap());
        assert_eq!(
            m["token_endpoint_auth_methods_supported"],
            serde_json::json!(["client_secret_basic", "client_secret_post"])
        );
    }

    #[test]
    fn only_successful_json_answers_to_get_are_rewritten() {
        let json = Some(&b"application/json; charset=UTF-8"[..]);
        assert!(is_rewritable(b"GET", 200, json, None));
        assert!(is_rewritable(
            b"GET",
            200,
            Some(b"Application/JSON"),
            Some(b"identity")
        ));
        assert!(is_rewritable(
            b"GET",
            200,
            Some(b"application/jwk-set+json"),
            None
        ));
        assert!(!is_rewritable(b"HEAD", 200, json, None));
        assert!(!is_rewritable(b"GET", 304, json, None));
        assert!(!is_rewritable(b"GET", 404, json, None));
        assert!(!is_rewritable(b"GET", 500, json, None));
        assert!(!is_rewritable(b"GET", 200, Some(b"text/html"), None));
        assert!(!is_rewritable(b"GET", 200, None, None));
        assert!(!is_rewritable(b"GET", 200, json, Some(b"gzip")));
    }

    #[test]
    fn the_body_is_rewritten_whole_at_its_end() {
        let rules = std::sync::Arc::new(rules(Some("https://gw"), None));
        let mut r = BodyRewriter::new(rules.clone());
        let body = br#"{"issuer":"https://idp/e/as","token_endpoint":"https://idp/e/as/token"}"#;
        let (a, done) = r.push(&body[..10], false);
        assert_eq!((a.len(), done), (0, None));
        let (b, done) = r.push(&body[10..], true);
        assert_eq!(done, Some(Outcome::Rewritten));
        assert_eq!(parse(&b)["token_endpoint"], "https://gw/e/as/token");

        let mut r = BodyRewriter::new(rules.clone());
        assert_eq!(
            r.push(b"<html>", true),
            (b"<html>".to_vec(), Some(Outcome::Unchanged))
        );
        // An empty body (none at all) is passed as it is.
        let mut r = BodyRewriter::new(rules.clone());
        assert_eq!(r.push(b"", true), (Vec::new(), Some(Outcome::Unchanged)));
    }

    #[test]
    fn a_body_over_the_limit_flows_through_unchanged() {
        let mut r = BodyRewriter::new(std::sync::Arc::new(rules(Some("https://gw"), None)));
        let big = vec![b' '; MAX_METADATA_BYTES];
        let (out, done) = r.push(b"{\"token_endpoint\":\"https://idp/t\",", false);
        assert_eq!((out.len(), done), (0, None));
        let (first, done) = r.push(&big, false);
        assert_eq!(done, None);
        assert!(first.starts_with(b"{\"token_endpoint\":\"https://idp/t\","));
        assert_eq!(
            r.push(b"\"x\":1}", true),
            (b"\"x\":1}".to_vec(), Some(Outcome::Unchanged))
        );
    }

    proptest! {
        /// However the body is cut into chunks, the result is the same.
        #[test]
        fn chunking_does_not_matter(cuts in prop::collection::vec(0usize..200, 0..6)) {
            let body = PINGONE.as_bytes();
            let rules = std::sync::Arc::new(rules(Some("https://gw"), None));
            let whole = rewrite(body, &rules).unwrap();
            let mut points: Vec<usize> = cuts.into_iter().map(|c| c % body.len()).collect();
            points.sort_unstable();
            let mut r = BodyRewriter::new(rules);
            let mut out = Vec::new();
            let mut last = 0;
            for p in points {
                out.extend(r.push(&body[last..p], false).0);
                last = p;
            }
            let (tail, done) = r.push(&body[last..], true);
            out.extend(tail);
            prop_assert_eq!(done, Some(Outcome::Rewritten));
            prop_assert_eq!(out, whole);
        }


        /// Any object stays an object with the same members, untouched ones equal.
        #[test]
        fn other_members_survive(members in prop::collection::btree_map("[a-z_]{1,12}", any::<i64>(), 0..12)) {
            let body = serde_json::to_vec(&members).unwrap();
            let out = rewrite(&body, &rules(Some("https://gw"), None)).unwrap();
            let m = parse(&out);
            for (k, v) in &members {
                if !k.ends_with("_auth_methods_supported") {
                    prop_assert_eq!(&m[k], &Value::from(*v));
                }
            }
        }
    }
}
