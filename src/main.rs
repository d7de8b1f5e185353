fn main() {
    println!("dormant");
}
