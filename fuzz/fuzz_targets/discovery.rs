//! `protocol::discovery`: `rewrite` of any body, and `BodyRewriter` fed it in arbitrary chunks.
//!
//! Input: a rules byte (bits 0-1 the public base URL, bits 2-3 the advertised methods, bit 7 an
//! empty first chunk), two chunk cut points, then the body.
//!
//! Invariants:
//! - A JSON object is rewritten; anything else is not metadata (and passes unchanged).
//! - The output is a JSON object holding the input's members, in order, then the method lists it
//!   adds; every member not rewritten keeps its value byte for byte; an endpoint URL gets the
//!   public base URL in place of its `scheme://host[:port]`; a method list is the configured one or
//!   the upstream's plus Basic and post.
//! - With unique member names, the output decoded as JSON advertises the gateway's methods.
//! - `BodyRewriter` gives the same bytes whatever the chunking.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tokengate::protocol::discovery::{
    rewrite, BodyRewriter, NotMetadata, Outcome, ENDPOINT_KEYS, METHOD_KEYS,
};
use tokengate::protocol::{AuthMethod, DiscoveryRewrite};
use tokengate_fuzz::{show, Members};

const BASES: [Option<&str>; 4] = [
    None,
    Some("https://gw.example.com"),
    Some("https://gw.example.com/idp"),
    Some("http://127.0.0.1:8080/a%20b"),
];

fuzz_target!(|data: &[u8]| {
    let &[rules, cut1, cut2, ref body @ ..] = data else {
        return;
    };
    let rules_set = DiscoveryRewrite {
        public_base_url: BASES[usize::from(rules & 3)].map(str::to_string),
        auth_methods: match rules >> 2 & 3 {
            2 => Some(vec![
                AuthMethod::ClientSecretBasic,
                AuthMethod::ClientSecretPost,
            ]),
            3 => Some(vec![AuthMethod::PrivateKeyJwt, AuthMethod::None]),
            _ => None,
        },
    };
    let result = rewrite(body, &rules_set);
    let as_value = serde_json::from_slice::<Value>(body).ok();
    match &result {
        Err(NotMetadata) => assert!(
            !matches!(as_value, Some(Value::Object(_))),
            "a JSON object was not rewritten: {:?}",
            show(body)
        ),
        Ok(out) => {
            // Not `Value`: values are kept byte for byte, lone surrogate escapes (valid JSON
            // syntax, which `Value` refuses to decode) included.
            assert!(
                is_object_syntax(body),
                "something other than a JSON object was rewritten: {:?}",
                show(body)
            );
            check_rewrite(body, out, &rules_set, as_value.is_some());
        }
    }

    // Chunking does not matter.
    let mut cuts = [
        usize::from(cut1) * body.len() / 255,
        usize::from(cut2) * body.len() / 255,
    ];
    cuts.sort();
    let mut chunks: Vec<&[u8]> = Vec::new();
    if rules & 0x80 != 0 {
        chunks.push(&[]);
    }
    chunks.extend([&body[..cuts[0]], &body[cuts[0]..cuts[1]], &body[cuts[1]..]]);
    let mut rewriter = BodyRewriter::new(Arc::new(rules_set));
    let mut sent = Vec::new();
    let mut outcome = None;
    for (i, chunk) in chunks.iter().enumerate() {
        let end = i + 1 == chunks.len();
        let (out, o) = rewriter.push(chunk, end);
        assert!(
            end || (out.is_empty() && o.is_none()),
            "output before the end"
        );
        sent.extend_from_slice(&out);
        outcome = o;
    }
    match (outcome, result) {
        (Some(Outcome::Rewritten), Ok(out)) => {
            assert_eq!(sent, out, "chunking changed the rewrite")
        }
        (Some(Outcome::Unchanged), Err(NotMetadata)) => assert_eq!(sent, body),
        (o, r) => panic!("BodyRewriter says {o:?}, rewrite says {:?}", r.map(|_| ())),
    }
});

/// Whether `json` is a JSON object by the grammar (string escapes not decoded).
fn is_object_syntax(json: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(json).is_ok()
        && json.trim_ascii_start().first() == Some(&b'{')
}

fn members(json: &[u8]) -> Vec<(String, String)> {
    let Members(m) = serde_json::from_slice(json).expect("members of a JSON object");
    m.into_iter()
        .map(|(k, v)| (k, v.get().to_string()))
        .collect()
}

/// The methods list the gateway should write for `upstream` (the first such member's raw value).
fn expected_methods(upstream: Option<&str>, rules: &DiscoveryRewrite) -> Vec<String> {
    if let Some(configured) = &rules.auth_methods {
        return configured.iter().map(|m| m.as_str().to_string()).collect();
    }
    let mut list: Vec<String> = match upstream.map(serde_json::from_str::<Value>) {
        Some(Ok(Value::Array(items))) => items
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    for m in ["client_secret_basic", "client_secret_post"] {
        if !list.iter().any(|x| x == m) {
            list.push(m.to_string());
        }
    }
    list
}

/// The endpoint URL the gateway should write in place of `raw`, if any.
fn expected_url(raw: &str, base: &str) -> Option<String> {
    let url: String = serde_json::from_str(raw).ok()?;
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let cut = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    (cut > 0).then(|| format!("{base}{}", &rest[cut..]))
}

fn check_rewrite(body: &[u8], out: &[u8], rules: &DiscoveryRewrite, decodes: bool) {
    assert!(
        is_object_syntax(out),
        "output is not a JSON object: {:?}",
        show(out)
    );
    let before = members(body);
    let after = members(out);
    assert!(after.len() >= before.len(), "members lost");

    let list_keys: Vec<&str> = METHOD_KEYS.iter().map(|(k, _)| *k).collect();
    let mut lists_seen: Vec<&str> = Vec::new();
    for ((key, raw), (out_key, out_raw)) in before.iter().zip(&after) {
        assert_eq!(key, out_key, "members reordered or renamed");
        let want = if list_keys.contains(&key.as_str()) && !lists_seen.contains(&key.as_str()) {
            lists_seen.push(key);
            serde_json::to_string(&expected_methods(Some(raw), rules)).expect("a list")
        } else if let (true, Some(new)) = (
            ENDPOINT_KEYS.contains(&key.as_str()),
            rules
                .public_base_url
                .as_deref()
                .and_then(|base| expected_url(raw, base)),
        ) {
            serde_json::to_string(&new).expect("a string")
        } else {
            raw.clone()
        };
        assert_eq!(*out_raw, want, "member {key:?}");
    }
    let has = |k: &str| before.iter().any(|(key, _)| key == k);
    let added: Vec<(String, String)> = METHOD_KEYS
        .iter()
        .filter(|(list, endpoint)| !has(list) && (*list == METHOD_KEYS[0].0 || has(endpoint)))
        .map(|(list, _)| {
            (
                list.to_string(),
                serde_json::to_string(&expected_methods(None, rules)).expect("a list"),
            )
        })
        .collect();
    assert_eq!(after[before.len()..], added[..], "members added");

    // Read as JSON (the last of duplicate names wins), a document with unique names advertises the
    // gateway's methods.
    let unique = before
        .iter()
        .enumerate()
        .all(|(i, (k, _))| before[..i].iter().all(|(k2, _)| k2 != k));
    if decodes && unique {
        let parsed: Value = serde_json::from_slice(out)
            .unwrap_or_else(|e| panic!("output does not decode ({e}): {:?}", show(out)));
        let parsed = parsed.as_object().expect("output is a JSON object");
        for (list, _) in METHOD_KEYS {
            let Some(v) = parsed.get(list) else { continue };
            let names: Vec<&str> = v
                .as_array()
                .expect("a methods list is an array")
                .iter()
                .map(|m| m.as_str().expect("method names are strings"))
                .collect();
            match &rules.auth_methods {
                Some(c) => assert!(names.iter().copied().eq(c.iter().map(|m| m.as_str()))),
                None => assert!(
                    names.contains(&"client_secret_basic") && names.contains(&"client_secret_post")
                ),
            }
        }
    }
}
