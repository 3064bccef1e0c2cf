//! Identities, request authentication and authorization.
//!
//! * [`sigv4`] verifies AWS Signature Version 4 (header and presigned-query forms) exactly as
//!   botocore signs: the tests check requests signed by botocore itself.
//! * [`policy`] parses IAM policy documents and evaluates them (explicit deny > allow >
//!   implicit deny), pure.
//! * [`identity`] is the account's directory: users, roles, access keys (secrets sealed at
//!   rest), inline policies and temporary credentials from AssumeRole.

pub mod identity;
pub mod policy;
pub mod sigv2;
pub mod sigv4;
