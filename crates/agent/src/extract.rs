//! Request extractors that fail with [`ApiError`] instead of axum's plain-text rejections.
//!
//! Invariant: a body or query a client sends is either parsed into the handler's type or
//! refused with JSON naming the problem: 415 for a missing or wrong content type, 400 for
//! bytes that are not JSON, 413 for a body over the configured limit, 422 for an unknown,
//! missing or mistyped field (named by its path).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use crate::error::{AioError, ApiError};

/// A JSON body for the native routes.
#[derive(Debug)]
pub struct Json<T>(pub T);

/// A JSON body for the AIO routes (errors in the AIO envelope).
#[derive(Debug)]
pub struct AioJson<T>(pub T);

/// A query string for the native routes.
#[derive(Debug)]
pub struct Query<T>(pub T);

/// A query string for the AIO routes.
#[derive(Debug)]
pub struct AioQuery<T>(pub T);

fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// Parses JSON bytes into `T`, naming the offending field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(v) => v,
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            return Err(json_error(&path, &inner));
        }
    };
    de.end().map_err(|e| json_error(".", &e))?;
    Ok(value)
}

fn json_error(path: &str, e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("request body is not valid JSON: {e}"),
        ),
        Category::Data => {
            let msg = e.to_string();
            // serde names a missing or unknown field in backticks; otherwise the path
            // the error occurred at is the field.
            let field = backticked(&msg)
                .filter(|_| msg.starts_with("missing field") || msg.starts_with("unknown field"))
                .map(|f| {
                    if path == "." {
                        f.to_owned()
                    } else if path == f || path.ends_with(&format!(".{f}")) {
                        path.to_owned()
                    } else {
                        format!("{path}.{f}")
                    }
                })
                .or_else(|| (path != ".").then(|| path.to_owned()))
                .unwrap_or_else(|| "body".to_owned());
            let clean = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                format!("invalid {field}: {clean}"),
            )
            .with_field(field)
        }
    }
}

fn backticked(msg: &str) -> Option<&str> {
    let start = msg.find('`')? + 1;
    let len = msg[start..].find('`')?;
    Some(&msg[start..start + len])
}

async fn read_json<T: DeserializeOwned, S: Send + Sync>(
    req: Request,
    state: &S,
) -> Result<T, ApiError> {
    if !is_json(req.headers()) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected a request body with content-type application/json",
        )
        .with_field("content-type"));
    }
    let bytes = Bytes::from_request(req, state).await.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "request body exceeds the configured limit",
            )
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("could not read the request body: {}", r.body_text()),
            )
        }
    })?;
    parse_json(&bytes)
}

/// Parses a query string into `T` with axum's own query parsing, so the error is ours.
pub fn parse_query<T: DeserializeOwned>(query: Option<&str>) -> Result<T, ApiError> {
    let uri: axum::http::Uri =
        format!("/?{}", query.unwrap_or_default())
            .parse()
            .map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    "the query string is malformed",
                )
            })?;
    axum::extract::Query::<T>::try_from_uri(&uri)
        .map(|q| q.0)
        .map_err(|e| {
            let text = e.body_text();
            let text = text
                .strip_prefix("Failed to deserialize query string: ")
                .unwrap_or(&text);
            let field = backticked(text).unwrap_or("query").to_owned();
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_query",
                format!("invalid query: {text}"),
            )
            .with_field(field)
        })
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        read_json(req, state).await.map(Json)
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for AioJson<T> {
    type Rejection = AioError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        read_json(req, state).await.map(AioJson).map_err(AioError)
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parse_query(parts.uri.query()).map(Query)
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for AioQuery<T> {
    type Rejection = AioError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parse_query(parts.uri.query())
            .map(AioQuery)
            .map_err(AioError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct R {
        command: String,
        n: Option<u32>,
    }

    #[test]
    fn names_fields() {
        let e = parse_json::<R>(br#"{"command":"x","bogus":1}"#).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.field.as_deref(), Some("bogus"));
        let e = parse_json::<R>(br#"{"n":1}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("command"));
        let e = parse_json::<R>(br#"{"command":"x","n":"y"}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("n"));
        assert!(!e.message.contains("line"), "{}", e.message);
        let e = parse_json::<R>(b"{nope").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = parse_json::<R>(br#"{"command":"x"} trailing"#).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(parse_json::<R>(br#"{"command":"x","n":null}"#).is_ok());
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Q {
        path: String,
    }

    #[test]
    fn query_errors() {
        assert_eq!(parse_query::<Q>(Some("path=%2Fa")).unwrap().path, "/a");
        let e = parse_query::<Q>(None).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.field.as_deref(), Some("path"));
    }
}
