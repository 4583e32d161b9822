//! What the `sesame` binary runs that tests also run in process: the
//! long-lived roles (router, API, publisher) of `sesame serve` and the role
//! commands.

pub mod roles;
