//! What a route does: fault injection, retries, rewrites, redirects, direct responses.

use super::{parse, results, table};
use crate::config::model::{
    FaultAbort, FaultDelay, HttpDirectResponse, HttpFault, HttpRedirect, HttpRetry, HttpRoute,
    RegexRewrite,
};
use crate::config::validate::virtual_service::http;
use crate::config::validate::Findings;

#[test]
fn validate_http_fault_injection_abort() {
    table(
        |f, a: &FaultAbort| http::actions::validate_http_fault_injection_abort(f, "a", a),
        &[
            (
                "valid",
                "{percentage: {value: 20}, httpStatus: 200}",
                true,
                false,
            ),
            ("valid default", "{httpStatus: 200}", true, false),
            (
                "invalid http status",
                "{percentage: {value: 20}, httpStatus: 9000}",
                false,
                false,
            ),
            (
                "invalid low http status",
                "{percentage: {value: 20}, httpStatus: 100}",
                false,
                false,
            ),
            (
                "valid percentage",
                "{percentage: {value: 0.001}, httpStatus: 200}",
                true,
                false,
            ),
            (
                "invalid fractional percent",
                "{percentage: {value: -10.0}, httpStatus: 200}",
                false,
                false,
            ),
            (
                "grpc: valid",
                "{percentage: {value: 20}, grpcStatus: DEADLINE_EXCEEDED}",
                true,
                false,
            ),
            (
                "grpc: valid default percentage",
                "{grpcStatus: DEADLINE_EXCEEDED}",
                true,
                false,
            ),
            (
                "grpc: invalid status",
                "{percentage: {value: 20}, grpcStatus: BAD_STATUS}",
                false,
                false,
            ),
            (
                "grpc: valid percentage",
                "{percentage: {value: 0.001}, grpcStatus: INTERNAL}",
                true,
                false,
            ),
            (
                "grpc: invalid fractional percent",
                "{percentage: {value: -10.0}, grpcStatus: DEADLINE_EXCEEDED}",
                false,
                false,
            ),
            // This port's cases.
            (
                "no error type warns",
                "{percentage: {value: 20}}",
                true,
                true,
            ),
            ("http2Error", "{http2Error: x}", false, false),
            (
                "percentage below 0.0001",
                "{percentage: {value: 0.00001}, httpStatus: 503}",
                false,
                false,
            ),
            (
                "two error types (protobuf oneof)",
                "{httpStatus: 503, grpcStatus: INTERNAL}",
                false,
                false,
            ),
        ],
    );
}

#[test]
fn validate_http_fault_injection_delay() {
    table(
        |f, d: &FaultDelay| http::actions::validate_http_fault_injection_delay(f, "d", d),
        &[
            (
                "valid fixed",
                "{percentage: {value: 20}, fixedDelay: 3s}",
                true,
                false,
            ),
            ("valid default", "{fixedDelay: 3s}", true, false),
            (
                "invalid percent",
                "{percentage: {value: 101}, fixedDelay: 3s}",
                false,
                false,
            ),
            (
                "invalid delay",
                "{percentage: {value: 20}, fixedDelay: 3.000000042s}",
                false,
                false,
            ),
            (
                "valid fractional percentage",
                "{percentage: {value: 0.001}, fixedDelay: 3s}",
                true,
                false,
            ),
            (
                "invalid fractional percentage",
                "{percentage: {value: -10.0}, fixedDelay: 3s}",
                false,
                false,
            ),
            // This port's cases.
            ("exponential delay", "{exponentialDelay: 3s}", false, false),
            (
                "no delay type is admitted (and dropped)",
                "{percentage: {value: 20}}",
                true,
                false,
            ),
            (
                "deprecated percent is not validated",
                "{percent: 200, fixedDelay: 1s}",
                true,
                false,
            ),
        ],
    );
}

#[test]
fn validate_http_fault_injection() {
    table(
        |f, fa: &HttpFault| http::actions::validate_http_fault_injection(f, "f", fa),
        &[
            ("neither abort nor delay", "{}", false, false),
            ("abort", "{abort: {httpStatus: 503}}", true, false),
            ("delay", "{delay: {fixedDelay: 1s}}", true, false),
            (
                "bad abort and delay",
                "{abort: {httpStatus: 1}, delay: {fixedDelay: 0s}}",
                false,
                false,
            ),
        ],
    );
}

#[test]
fn validate_http_retry() {
    table(
        |f, r: &HttpRetry| http::actions::validate_http_retry(f, "r", r),
        &[
            (
                "valid",
                "{attempts: 10, perTryTimeout: 2s, retryOn: '5xx,gateway-error'}",
                true,
                false,
            ),
            ("disable retries", "{attempts: 0}", true, false),
            (
                "invalid, retry policy configured but attempts set to zero",
                "{attempts: 0, perTryTimeout: 2s, retryOn: '5xx,gateway-error'}",
                false,
                false,
            ),
            ("valid default", "{attempts: 10}", true, false),
            (
                "valid http status retryOn",
                "{attempts: 10, perTryTimeout: 2s, retryOn: '503,connect-failure'}",
                true,
                false,
            ),
            (
                "invalid attempts",
                "{attempts: -1, perTryTimeout: 2s}",
                false,
                false,
            ),
            (
                "invalid timeout",
                "{attempts: 10, perTryTimeout: 2.000000001s}",
                false,
                false,
            ),
            (
                "timeout too small",
                "{attempts: 10, perTryTimeout: 0.000000999s}",
                false,
                false,
            ),
            (
                "invalid backoff",
                "{attempts: 10, backoff: 0.000000999s}",
                false,
                false,
            ),
            (
                "invalid policy retryOn",
                "{attempts: 10, perTryTimeout: 2s, retryOn: '5xx,invalid policy'}",
                false,
                false,
            ),
            (
                "invalid http status retryOn",
                "{attempts: 10, perTryTimeout: 2s, retryOn: '600,connect-failure'}",
                false,
                false,
            ),
            (
                "invalid, retryRemoteLocalities configured but attempts set to zero",
                "{attempts: 0, retryRemoteLocalities: false}",
                false,
                false,
            ),
            // This port's cases: Go's net/http names 418 but not 499, and nothing is trimmed.
            (
                "418 is a known status",
                "{attempts: 1, retryOn: '418'}",
                true,
                false,
            ),
            ("499 is not", "{attempts: 1, retryOn: '499'}", false, false),
            (
                "a space after the comma",
                "{attempts: 1, retryOn: '5xx, reset'}",
                false,
                false,
            ),
            (
                "a trailing comma",
                "{attempts: 1, retryOn: '5xx,'}",
                false,
                false,
            ),
            (
                "grpc policies",
                "{attempts: 1, retryOn: 'cancelled,unavailable,resource-exhausted'}",
                true,
                false,
            ),
        ],
    );
}

#[test]
fn validate_http_rewrite() {
    results(
        http::actions::validate_http_rewrite,
        &[
            ("uri and authority", "{uri: /path/to/resource, authority: foobar.org}", true),
            ("uri", "{uri: /path/to/resource}", true),
            ("authority", "{authority: foobar.org}", true),
            ("uriRegexRewrite", "{uriRegexRewrite: {match: '^/service/([^/]+)(/.*)$', rewrite: '\\2/instance/\\1'}}", true),
            ("uriRegexRewrite and authority", "{authority: foobar.org, uriRegexRewrite: {match: '^/service/([^/]+)(/.*)$', rewrite: '\\2/instance/\\1'}}", true),
            ("uriRegexRewrite and uri", "{uri: /path/to/resource, uriRegexRewrite: {match: '^/service/([^/]+)(/.*)$', rewrite: '\\2/instance/\\1'}}", false),
            ("no uri, uriRegexRewrite, or authority", "{}", false),
            ("empty uri counts as unset", "{uri: ''}", false),
        ],
    );
}

#[test]
fn validate_uri_regex_rewrite() {
    results(
        http::actions::validate_uri_regex_rewrite,
        &[
            (
                "uriRegexRewrite happy path",
                "{match: '^/service/([^/]+)(/.*)$', rewrite: '\\2/instance/\\1'}",
                true,
            ),
            (
                "uriRegexRewrite missing match",
                "{rewrite: '\\2/instance/\\1'}",
                false,
            ),
            (
                "uriRegexRewrite missing rewrite",
                "{match: '^/service/([^/]+)(/.*)$'}",
                false,
            ),
            (
                "uriRegexRewrite invalid regex patterns",
                "{match: '[', rewrite: '['}",
                false,
            ),
        ],
    );
    let rr: RegexRewrite = parse("{match: '[', rewrite: x}");
    let e = http::actions::validate_uri_regex_rewrite(&rr).unwrap_err();
    assert!(
        e.starts_with("\"HTTPRewrite.UriRegexRewrite.Match\": error parsing regexp: "),
        "{e}"
    );
    assert!(
        e.ends_with(
            "; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)"
        ),
        "{e}"
    );
}

#[test]
fn validate_http_redirect() {
    results(
        |r: &HttpRedirect| http::actions::validate_http_redirect(r, &[]).map_err(|e| e.1),
        &[
            ("empty uri and authority", "{uri: '', authority: ''}", false),
            (
                "too small redirect code",
                "{uri: t, authority: '', redirectCode: 299}",
                false,
            ),
            (
                "too large redirect code",
                "{uri: t, authority: '', redirectCode: 400}",
                false,
            ),
            ("empty authority", "{uri: t, authority: ''}", true),
            ("empty uri", "{uri: '', authority: t}", true),
            (
                "empty redirect code",
                "{uri: t, authority: t, redirectCode: 0}",
                true,
            ),
            (
                "normal redirect",
                "{uri: t, authority: t, redirectCode: 308}",
                true,
            ),
            ("prefix_rewrite alone", "{prefixRewrite: /bar}", true),
            (
                "prefix_rewrite with authority",
                "{authority: foo.example.com, prefixRewrite: /}",
                true,
            ),
            (
                "uri and prefix_rewrite mutually exclusive",
                "{uri: /old, prefixRewrite: /new}",
                false,
            ),
            // This port's cases.
            ("scheme only", "{scheme: https}", true),
            ("bad scheme", "{scheme: ftp}", false),
            ("port only", "{port: 8443}", true),
            ("port 0 counts as set", "{port: 0}", true),
            ("port out of range", "{port: 70000}", false),
            ("derivePort only", "{derivePort: FROM_REQUEST_PORT}", true),
        ],
    );
    // Codes Istio admits but cannot emit are refused here (an extra check).
    for (code, ok) in [(301, true), (304, false), (308, true)] {
        let mut f = Findings::default();
        let r: HttpRoute = parse(&format!("{{redirect: {{uri: /, redirectCode: {code}}}}}"));
        http::validate_http_route(&mut f, "r", &r, false);
        assert_eq!(f.errors.is_empty(), ok, "{code}: {f:?}");
    }
}

#[test]
fn validate_http_direct_response() {
    let big = |n: usize| "a".repeat(n);
    let b64 = |n: usize| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(vec![b'a'; n])
    };
    let cases: Vec<(&str, String, bool, bool)> = vec![
        ("status 200", "{status: 200}".into(), true, false),
        ("status 100", "{status: 199}".into(), false, false),
        ("status 600", "{status: 601}".into(), false, false),
        (
            "with string body",
            "{status: 200, body: {string: hello}}".into(),
            true,
            false,
        ),
        (
            "with string body over 100kb",
            format!("{{status: 200, body: {{string: {}}}}}", big(101 << 10)),
            true,
            true,
        ),
        (
            "with string body over 1mb",
            format!("{{status: 200, body: {{string: {}}}}}", big(2 << 20)),
            false,
            false,
        ),
        (
            "with bytes body",
            format!("{{status: 200, body: {{bytes: {}}}}}", b64(5)),
            true,
            false,
        ),
        (
            "with bytes body over 100kb",
            format!("{{status: 200, body: {{bytes: {}}}}}", b64((100 << 10) + 1)),
            true,
            true,
        ),
        (
            "with bytes body over 1mb",
            format!("{{status: 200, body: {{bytes: {}}}}}", b64((1 << 20) + 1)),
            false,
            false,
        ),
        // This port's cases (protobuf parse).
        (
            "bytes not base64",
            "{status: 200, body: {bytes: '***'}}".into(),
            false,
            false,
        ),
        (
            "string and bytes",
            "{status: 200, body: {string: a, bytes: YQ==}}".into(),
            false,
            false,
        ),
    ];
    for (name, src, valid, warns) in &cases {
        table(
            |f, d: &HttpDirectResponse| http::actions::validate_http_direct_response(f, "d", d),
            &[(name, src.as_str(), *valid, *warns)],
        );
    }
}
