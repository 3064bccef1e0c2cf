//! Identities and request authentication.
//!
//! [`sigv4`] verifies AWS Signature Version 4 (header and presigned-query forms) exactly as
//! botocore signs: the tests check requests signed by botocore itself. Pure: the caller gives
//! the request's parts, the secret for its access key id, and the current time.

pub mod sigv4;
