//! Live migration from this process (wired to the `migrate` engine).

use api::{Request, Response, Route};

use crate::host::Host;

pub fn handle(_host: &Host, _route: Route, _req: &Request) -> Response {
    Response::error(501, "live migration is not wired in yet")
}
