//! Reading an HTTP response body under a size cap, for the HTTPS clients (MTA-STS
//! policies, OAuth2 token endpoints): a declared `Content-Length` over the cap is refused
//! before any byte is read, and a body that grows past it is cut off.

use http_body_util::{BodyExt, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::CONTENT_LENGTH;
use hyper::Response;

/// Why a body was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Larger than the cap (declared or read).
    TooLarge,
    /// The connection failed while reading.
    Http(String),
}

/// The whole body of `response`, at most `max` bytes.
pub async fn read_capped(response: Response<Incoming>, max: usize) -> Result<Bytes, BodyError> {
    let declared = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return Err(BodyError::TooLarge);
    }
    Limited::new(response.into_body(), max)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                BodyError::TooLarge
            } else {
                BodyError::Http(e.to_string())
            }
        })
}
