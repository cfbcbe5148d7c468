//! Crypto and encoding on the hot path: the project-secret check, client
//! tokens (ours against `jsonwebtoken`), the config snapshot of 1k projects,
//! and browser entropy to device id.
//!
//! Run: `cargo bench -p qyzar-benches --bench crypto`.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use qyzar_benches::fixtures;
use qyzar_benches::tokens::{JwtCrate, QyzarEdDsa, QyzarHs256, TokenCodec};
use qyzar_engine::decide::{device_id, Entropy};
use qyzar_shared::crypto::{ct_eq, Ed25519Signer, ProjectSecret};
use qyzar_shared::snapshot::{decode_snapshot, encode_snapshot, ConfigIndex};
use ring::digest;

/// `SecretHash::matches` (SHA-256 + constant-time compare) against the naive
/// SHA-256 + `==`, and the constant-time compare alone: what the protection
/// against timing attacks costs next to the hash.
fn secret_check(c: &mut Criterion) {
    let secret = ProjectSecret::generate();
    let stored = secret.hash();
    let wrong = ProjectSecret::generate();
    let naive = |presented: &str| {
        digest::digest(&digest::SHA256, presented.as_bytes()).as_ref() == stored.as_bytes()
    };
    let mut g = c.benchmark_group("secret_check");
    g.bench_function("matches/right", |b| {
        b.iter(|| stored.matches(black_box(secret.expose())))
    });
    g.bench_function("matches/wrong", |b| {
        b.iter(|| stored.matches(black_box(wrong.expose())))
    });
    g.bench_function("naive_sha256_eq/right", |b| {
        b.iter(|| naive(black_box(secret.expose())))
    });
    g.bench_function("ct_eq_only", |b| {
        b.iter(|| ct_eq(black_box(stored.as_bytes()), black_box(&[0u8; 32])))
    });
    g.finish();
}

/// Sign and verify through [`TokenCodec`], ours against `jsonwebtoken`.
fn tokens(c: &mut Criterion) {
    let now = fixtures::now_unix();
    let claims = fixtures::claims(now);
    let pkcs8 = Ed25519Signer::generate_pkcs8();
    let sets: [(&str, [Box<dyn TokenCodec>; 2]); 2] = [
        (
            "hs256",
            [
                Box::new(QyzarHs256::new([7; 32], now)),
                Box::new(JwtCrate::hs256([7; 32])),
            ],
        ),
        (
            "eddsa",
            [
                Box::new(QyzarEdDsa::new(&pkcs8, now)),
                Box::new(JwtCrate::eddsa(&pkcs8)),
            ],
        ),
    ];
    for (alg, codecs) in &sets {
        let mut g = c.benchmark_group(format!("token_{alg}"));
        for codec in codecs {
            let token = codec.sign(&claims);
            assert!(codec.verify(&token).is_some(), "{} {alg}", codec.name());
            g.bench_function(format!("sign/{}", codec.name()), |b| {
                b.iter(|| codec.sign(black_box(&claims)))
            });
            g.bench_function(format!("verify/{}", codec.name()), |b| {
                b.iter(|| codec.verify(black_box(&token)))
            });
        }
        if *alg == "hs256" {
            // The engine's miss path: the same checks, only the answer's facts kept.
            let facts = QyzarHs256::new([7; 32], now);
            let token = facts.sign(&claims);
            assert!(facts.verify_facts(&token).is_some());
            g.bench_function("verify_facts/qyzar", |b| {
                b.iter(|| facts.verify_facts(black_box(&token)))
            });
        }
        g.finish();
    }
}

/// The config snapshot admin pushes: encode (admin), decode (engine, with
/// bytecheck) and the index the engine builds before swapping it in.
fn snapshot(c: &mut Criterion) {
    const PROJECTS: u32 = 1000;
    let snap = fixtures::snapshot(PROJECTS);
    let bytes = encode_snapshot(&snap).expect("the fixture encodes");
    eprintln!("snapshot: {PROJECTS} projects = {} bytes", bytes.len());
    let mut g = c.benchmark_group("snapshot_1k");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("encode", |b| b.iter(|| encode_snapshot(black_box(&snap))));
    g.bench_function("decode", |b| b.iter(|| decode_snapshot(black_box(&bytes))));
    g.finish();
    // Its own group: a throughput in encoded bytes would mean nothing here.
    let mut g = c.benchmark_group("snapshot_1k_index");
    g.bench_function("build", |b| {
        b.iter_batched(|| snap.clone(), ConfigIndex::new, BatchSize::LargeInput)
    });
    g.finish();
}

/// `/connect`'s first steps: the entropy JSON parsed and validated, then
/// hashed into the stable device id.
fn entropy(c: &mut Criterion) {
    let json = fixtures::entropy_json();
    let e = fixtures::entropy();
    let mut g = c.benchmark_group("entropy");
    g.bench_function("parse_validate", |b| {
        b.iter(|| {
            let e: Entropy = serde_json::from_str(black_box(&json)).expect("valid fixture");
            e.validate(json.len()).map(|()| e)
        })
    });
    g.bench_function("device_id", |b| b.iter(|| device_id(black_box(&e))));
    g.bench_function("parse_validate_device_id", |b| {
        b.iter(|| {
            let e: Entropy = serde_json::from_str(black_box(&json)).expect("valid fixture");
            e.validate(json.len()).map(|()| device_id(&e))
        })
    });
    g.finish();
}

criterion_group!(benches, secret_check, tokens, snapshot, entropy);
criterion_main!(benches);
