//! `containerd-shim-berth-v2`: berth's containerd shim v2. containerd runs it
//! as `start` (spawn the server, print its address), `delete` (clean up after a
//! dead shim), or with `-socket` as the long-running ttrpc task server.

use berth_shim::{cleanup, cli, server, start, RUNTIME_ID};

fn main() {
    cli::main(
        RUNTIME_ID,
        "containerd-shim-berth-v2",
        |flags| match flags.action.as_str() {
            "start" => start::run(flags),
            "delete" => cleanup::run(flags),
            _ => server::serve(flags),
        },
    )
}
