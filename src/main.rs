//! The `wsgate` binary: parse flags, run the server.

fn main() {
    let config = wsgate::config::Config::from_args();
    wsgate::sys::log::set_level(config.log_level);
    if let Err(e) = wsgate::app::run(config) {
        wsgate::config::fail(&e.0);
    }
}
