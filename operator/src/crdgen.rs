//! Prints the GuessGame CustomResourceDefinition as YAML:
//! `cargo run -p guessgame-operator --bin crdgen > manifests/crd.yaml`.

fn main() {
    print!("{}", guessgame_operator::crd_yaml());
}
