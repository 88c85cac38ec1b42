fn main() -> std::process::ExitCode {
    dockmaster::run()
}
