fn main() {
    eprintln!("sai-web: not yet implemented");
    std::process::exit(2);
}
