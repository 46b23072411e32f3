fn main() {
    eprintln!("sai-device: not yet implemented");
    std::process::exit(2);
}
