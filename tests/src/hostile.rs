//! A hostile relay (filled in below).
