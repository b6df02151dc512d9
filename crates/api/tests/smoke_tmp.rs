#[test]
fn smoke() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/seeds/yaml");
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let t = std::fs::read_to_string(&p).unwrap();
        match api::parse(p.file_name().unwrap().to_str().unwrap(), &t) {
            Ok(rs) => for r in rs { println!("{} {} ok", r.kind_name(), r.name()); let y = r.to_yaml(); let back = api::parse("rt", &y).unwrap(); assert_eq!(back, vec![r.clone()], "{y}"); }
            Err(e) => println!("ERR {e}"),
        }
    }
    let bad = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a, subet: v1}\n      weight: 1\n";
    println!("{}", api::parse("b.yaml", bad).unwrap_err());
    let bad = "---\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n      weight: x\n";
    println!("{}", api::parse("b.yaml", bad).unwrap_err());
    let bad = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec:\n  host: a\n  trafficPolicy: {loadBalancer: {simple: ROUND_ROBBIN}, connectionPool: {tcp: {connectTimeout: 5x}}}\n";
    println!("{}", api::parse("b.yaml", bad).unwrap_err());
    let bad = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspex: {}\n";
    println!("{}", api::parse("b.yaml", bad).unwrap_err());
    let bad = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: reviews}\nspec: {replicas: x}\n";
    println!("{}", api::parse("b.yaml", bad).unwrap_err());
    let bad = "apiVersion: v1\nkind: Service\nmetadata: {name: reviews}\nspec: {ports: [{port: 80}]}\n---\nkind: List\napiVersion: v1\nitems: [{apiVersion: v1, kind: Namespace, metadata: {name: x}}, {apiVersion: v1, kind: Namespace, metadata: {name: [1]}}]\n";
    println!("{}", api::parse("b.yaml", bad).unwrap_err());
    println!("{}", api::parse("b.yaml", "a: [").unwrap_err());
}
