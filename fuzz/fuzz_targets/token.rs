//! `protocol::extract` and `Extracted::convert`: the token-request decision on any `Authorization`
//! headers and any body.
//!
//! Input: one flag byte, then the header values (one per line), an empty line, and the body. With
//! no empty line, there is no header and the rest is the body. Flags: bits 0-1 the conversion
//! (none, to Basic, to post, to Basic), bit 2 raw Basic encoding, bits 3-5 the endpoint, bit 6 the
//! raw reading of the Basic credentials taken as the client's (as validation does when the
//! client's record confirms it).
//!
//! Invariants:
//! - Every refusal is an RFC 6749 §5.2 JSON error (see `check_refusal`).
//! - What `extract` found is what the request holds: one method, the body's credentials decoded,
//!   no credential parameter twice.
//! - Nothing but the credential pieces changes in the body: every other `&`-piece of the original
//!   body is in the forwarded body, byte for byte, in order, and nothing else is.
//! - The forwarded request carries the same client_id and secret, in the target method.
//! - post -> Basic -> post round-trips the credentials (RFC 6749 encoding), and so does
//!   Basic -> post -> Basic; post -> raw Basic -> post too, when the client_id has nothing to
//!   decode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokengate::protocol::basic::{self, Authorization};
use tokengate::protocol::{
    decide, extract, BasicEncoding, Conversion, Credentials, Endpoint, Forward, HeaderChange,
    MethodSeen, Reading,
};
use tokengate_fuzz::{check_refusal, other_pieces, show, split_n, values_of};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let [head, body] = split_n(rest, b"\n\n", 2)[..] else {
        unreachable!()
    };
    let (head, body) = if rest.windows(2).any(|w| w == b"\n\n") {
        (head, body)
    } else {
        (&b""[..], rest)
    };
    let headers: Vec<&[u8]> = if head.is_empty() {
        Vec::new()
    } else {
        head.split(|&b| b == b'\n').collect()
    };
    let conversion = match flags & 3 {
        0 => None,
        2 => Some(Conversion::ToPost),
        _ => Some(Conversion::ToBasic),
    };
    let encoding = if flags & 4 != 0 {
        BasicEncoding::Raw
    } else {
        BasicEncoding::Rfc6749
    };
    let endpoint = Endpoint::ALL[usize::from(flags >> 3 & 7) % Endpoint::ALL.len()];
    let raw_reading = flags & 0x40 != 0;
    check(&headers, body, conversion, encoding, endpoint, raw_reading);
});

/// The pieces that must survive a conversion untouched (empty pieces carry nothing).
fn kept(body: &[u8]) -> Vec<&[u8]> {
    other_pieces(body)
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect()
}

fn check(
    headers: &[&[u8]],
    body: &[u8],
    conversion: Option<Conversion>,
    encoding: BasicEncoding,
    endpoint: Endpoint,
    raw_reading: bool,
) {
    let x = match extract(headers, body) {
        Ok(x) => x,
        Err(e) => {
            check_refusal(&e);
            assert!(
                matches!(e.status, 400 | 401),
                "extract refused with {}",
                e.status
            );
            if let Some(c) = conversion {
                if endpoint == Endpoint::Token && !raw_reading {
                    assert_eq!(decide(headers, body, c, encoding), Err(e));
                }
            }
            return;
        }
    };

    // What was found is what the request holds.
    let method = x.method_seen();
    assert_eq!(
        format!("{x:?}"),
        format!("Extracted {{ method_seen: {method:?}, .. }}"),
        "Debug of Extracted shows only the method"
    );
    for name in [
        &b"client_id"[..],
        b"client_secret",
        b"client_assertion",
        b"client_assertion_type",
        b"grant_type",
    ] {
        assert!(
            values_of(body, name).len() <= 1,
            "{} repeated but accepted",
            show(name)
        );
    }
    assert_eq!(
        x.grant_type().map(<[u8]>::to_vec),
        values_of(body, b"grant_type").pop()
    );
    assert!(headers.len() <= 1);
    let basic_header = headers
        .first()
        .is_some_and(|h| basic::parse_readings(h).is_ok_and(|r| r.is_some()));
    assert_eq!(x.tried_basic(), basic_header);
    let body_id = values_of(body, b"client_id").pop();
    let body_secret = values_of(body, b"client_secret").pop();
    match method {
        MethodSeen::BASIC => assert!(basic_header && body_secret.is_none()),
        MethodSeen::POST => {
            assert!(headers.is_empty());
            assert_eq!(x.client_id(), body_id.as_deref());
            assert_eq!(x.secret(), body_secret.as_deref());
        }
        MethodSeen::OtherScheme => assert!(!basic_header && headers.len() == 1),
        _ => assert!(headers.is_empty() && body_secret.is_none()),
    }
    if let (true, Some(id)) = (basic_header, &body_id) {
        assert_eq!(
            x.client_id(),
            Some(&id[..]),
            "body client_id differs from Basic's"
        );
    }
    if let Some(id) = x.client_id() {
        assert!(!id.is_empty(), "empty client_id accepted");
    }

    let raw_only = x.raw_only();
    let alternative = x.raw_alternative().map(<[u8]>::to_vec);
    let x = if raw_reading {
        x.with_reading(Reading::Raw)
    } else {
        x
    };
    if let Some(alt) = &alternative {
        if raw_reading {
            assert_eq!(x.secret(), Some(&alt[..]));
        }
    }
    let id = x.client_id().map(<[u8]>::to_vec);
    let secret = x.secret().map(<[u8]>::to_vec);

    let f = match x.convert(conversion, encoding, endpoint, headers, body) {
        Ok(f) => f,
        Err(e) => {
            check_refusal(&e);
            assert_eq!(e.status, 401, "convert refused with {}", e.status);
            let colon = encoding == BasicEncoding::Raw
                && conversion == Some(Conversion::ToBasic)
                && id.as_ref().is_some_and(|id| id.contains(&b':'));
            assert!(
                (raw_only && !raw_reading) || colon,
                "convert refused a request extract accepted"
            );
            return;
        }
    };
    assert!(
        !(raw_only && !raw_reading),
        "unverified raw-only Basic converted"
    );
    if let (Some(c), Endpoint::Token, false) = (conversion, endpoint, raw_reading) {
        assert_eq!(decide(headers, body, c, encoding), Ok(f.clone()));
    }
    assert_eq!(f.method_seen, method);
    assert_eq!(
        f.converted(),
        f.authorization != HeaderChange::Keep || f.body.is_some()
    );
    let credentials = matches!(method, MethodSeen::BASIC | MethodSeen::POST);
    if conversion.is_none() || !credentials {
        assert_eq!(
            (&f.authorization, &f.body),
            (&HeaderChange::Keep, &None),
            "nothing to convert, yet changed"
        );
        return;
    }
    let (id, secret) = (id.expect("a client_id"), secret.expect("a secret"));

    // The forwarded request.
    let (fwd_headers, fwd_body) = forwarded(headers, body, &f);
    assert_eq!(
        kept(&fwd_body),
        kept(body),
        "pieces other than the credentials changed: {:?} -> {:?}",
        show(body),
        show(&fwd_body)
    );
    let creds = Credentials {
        client_id: id.clone(),
        secret: secret.clone().into(),
    };
    match conversion {
        Some(Conversion::ToBasic) => {
            let [h] = fwd_headers[..] else {
                panic!("to Basic without one Authorization header")
            };
            assert_eq!(read_basic(h, encoding), creds, "Basic header credentials");
            assert!(values_of(&fwd_body, b"client_secret").is_empty());
            for body_id in values_of(&fwd_body, b"client_id") {
                assert_eq!(body_id, id);
            }
            if method == MethodSeen::POST && endpoint != Endpoint::Par {
                assert!(
                    values_of(&fwd_body, b"client_id").is_empty(),
                    "client_id left in the body"
                );
            }
        }
        Some(Conversion::ToPost) => {
            assert!(
                fwd_headers.is_empty(),
                "to post with an Authorization header"
            );
            assert_eq!(values_of(&fwd_body, b"client_id"), [id.clone()]);
            assert_eq!(values_of(&fwd_body, b"client_secret"), [secret.clone()]);
        }
        None => unreachable!(),
    }

    // Round trips.
    match (conversion, method) {
        (Some(Conversion::ToBasic), MethodSeen::POST) => {
            let h = fwd_headers[0];
            if encoding == BasicEncoding::Raw && (id.contains(&b'%') || id.contains(&b'+')) {
                return; // The raw reading of such an id is another client: not comparable.
            }
            let mut back = extract(&[h], &fwd_body).unwrap_or_else(|e| {
                panic!(
                    "post -> Basic gave a request extract refuses ({e:?}): {:?} {:?}",
                    show(h),
                    show(&fwd_body)
                )
            });
            if encoding == BasicEncoding::Raw {
                back = back.with_reading(Reading::Raw);
            }
            let f2 = back
                .convert(
                    Some(Conversion::ToPost),
                    BasicEncoding::Rfc6749,
                    endpoint,
                    &[h],
                    &fwd_body,
                )
                .expect("Basic -> post of a converted request");
            let (h2, b2) = forwarded(&[h], &fwd_body, &f2);
            assert!(h2.is_empty());
            assert_eq!(
                values_of(&b2, b"client_id"),
                [id.clone()],
                "post -> Basic -> post: id"
            );
            assert_eq!(
                values_of(&b2, b"client_secret"),
                [secret],
                "post -> Basic -> post: secret"
            );
            assert_eq!(kept(&b2), kept(body));
        }
        (Some(Conversion::ToPost), MethodSeen::BASIC) if encoding == BasicEncoding::Rfc6749 => {
            let back =
                extract(&[], &fwd_body).expect("Basic -> post gave a request extract refuses");
            assert_eq!(back.method_seen(), MethodSeen::POST);
            let f2 = back
                .convert(
                    Some(Conversion::ToBasic),
                    BasicEncoding::Rfc6749,
                    endpoint,
                    &[],
                    &fwd_body,
                )
                .expect("post -> Basic of a converted request");
            let (h2, b2) = forwarded(&[], &fwd_body, &f2);
            let [h2] = h2[..] else {
                panic!("no Basic header")
            };
            assert_eq!(
                basic::parse_authorization(h2),
                Ok(Authorization::Basic(creds)),
                "Basic -> post -> Basic"
            );
            assert_eq!(kept(&b2), kept(body));
        }
        _ => {}
    }
}

/// The headers and body the upstream receives.
fn forwarded<'a>(headers: &[&'a [u8]], body: &[u8], f: &'a Forward) -> (Vec<&'a [u8]>, Vec<u8>) {
    let h = match &f.authorization {
        HeaderChange::Keep => headers.to_vec(),
        HeaderChange::Remove => Vec::new(),
        HeaderChange::Set(v) => vec![v.as_bytes()],
    };
    let b = f.body.as_deref().unwrap_or(body).to_vec();
    (h, b)
}

/// The credentials an upstream with this encoding reads from a Basic header.
fn read_basic(h: &[u8], encoding: BasicEncoding) -> Credentials {
    let r = basic::parse_readings(h)
        .unwrap_or_else(|e| panic!("forwarded Basic header {:?}: {e}", show(h)))
        .expect("a Basic header");
    match (encoding, r.raw) {
        (BasicEncoding::Raw, Some(raw)) => raw,
        (_, _) => r.standard.expect("RFC 6749 reading"),
    }
}
