//! `remote`: a command-line device. It pairs with a host through the link `agent-host pair`
//! prints, keeps its key (mode 0600) and what it learnt about the host in a profile
//! ([`profile`]), and talks to the host through the relay ([`session`]): every request and
//! decision is signed with its key; every event it accepts is checked against the host key from
//! pairing. It can only ask: the host decides.

#![forbid(unsafe_code)]

pub mod profile;
pub mod session;
