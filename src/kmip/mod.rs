//! KMIP (issue 16), in progress: the TTLV codec is here; the listener and the operations are not
//! built yet. Only the server will import this module.

pub mod ttlv;
