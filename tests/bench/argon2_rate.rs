//! Raw argon2id verifies per second: the ceiling for password sign-ins per second.
//!
//! `cargo bench --bench argon2_rate [-- --threads N --seconds S --memory-kib M
//! --iterations T --parallelism P]` hashes one password, then verifies it from N threads
//! (default: one per core) for S seconds, exactly as a sign-in does (parse the stored PHC
//! string, verify with the parameters it names), and prints one line:
//!
//! `argon2_rate verifies_per_second=… verifies=… threads=… seconds=… m=… t=… p=…`
//!
//! Defaults are Latchkey's production parameters (m=19456 KiB, t=2, p=1). `deploy/bench.sh`
//! compares this number with the server's sign-ins per second. With `--pool`, the same
//! verifies go through Latchkey's own hash pool (`latchkey::crypto::PasswordHasher`, one
//! slot per thread, twice as many verifies queued), and the line starts
//! `argon2_rate pool`: the part of any gap that the pool itself costs. Run under `cargo test` or
//! nextest (no `--bench` argument), it only checks once, with small parameters, that a
//! hash verifies.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use argon2::password_hash::SaltString;
use argon2::password_hash::rand_core::OsRng;
use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};

const PASSWORD: &[u8] = b"Bench-Sign-In.42";

struct Options {
    bench: bool,
    pool: bool,
    threads: usize,
    seconds: f64,
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        bench: false,
        pool: false,
        threads: std::thread::available_parallelism().map_or(1, usize::from),
        seconds: 10.0,
        memory_kib: 19456,
        iterations: 2,
        parallelism: 1,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--bench" => options.bench = true,
            "--pool" => options.pool = true,
            "--threads" => options.threads = number(&value(&arg)?)?,
            "--seconds" => options.seconds = number(&value(&arg)?)?,
            "--memory-kib" => options.memory_kib = number(&value(&arg)?)?,
            "--iterations" => options.iterations = number(&value(&arg)?)?,
            "--parallelism" => options.parallelism = number(&value(&arg)?)?,
            // Anything else comes from a test runner (libtest's flags, a filter).
            _ => {}
        }
    }
    if options.threads == 0 || options.seconds <= 0.0 {
        return Err("--threads and --seconds must be positive".into());
    }
    Ok(options)
}

fn number<T: std::str::FromStr>(text: &str) -> Result<T, String> {
    text.parse().map_err(|_| format!("not a number: {text}"))
}

fn stored_hash(params: Params) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(PASSWORD, &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| e.to_string())
}

/// One verification the way `latchkey::crypto::PasswordHasher` does it.
fn verify(stored: &str) -> bool {
    PasswordHash::new(stored)
        .is_ok_and(|parsed| Argon2::default().verify_password(PASSWORD, &parsed).is_ok())
}

fn run(options: &Options) -> Result<(), String> {
    let params = Params::new(
        options.memory_kib,
        options.iterations,
        options.parallelism,
        None,
    )
    .map_err(|e| e.to_string())?;
    let stored = Arc::new(stored_hash(params)?);
    if !verify(&stored) {
        return Err("the hash does not verify".into());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..options.threads)
        .map(|_| {
            let (stored, stop, count) = (stored.clone(), stop.clone(), count.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if verify(&stored) {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(options.seconds));
    stop.store(true, Ordering::Relaxed);
    // Verifies still running finish and count: divide by the time the last one ended.
    for worker in workers {
        worker.join().map_err(|_| "a worker panicked".to_owned())?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let verifies = count.load(Ordering::Relaxed);
    println!(
        "argon2_rate verifies_per_second={:.2} verifies={verifies} threads={} seconds={elapsed:.3} m={} t={} p={}",
        verifies as f64 / elapsed,
        options.threads,
        options.memory_kib,
        options.iterations,
        options.parallelism,
    );
    Ok(())
}

/// The same verifies through `latchkey::crypto::PasswordHasher`, with as many slots as
/// threads and twice as many verifies in flight, so that the pool never waits for work.
fn run_pool(options: &Options) -> Result<(), String> {
    use latchkey::crypto::hasher::HasherSettings;
    use latchkey::crypto::{PasswordHasher as Pool, Verification};
    use latchkey::domain::Password;

    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let pool = Pool::new(HasherSettings {
        memory_kib: options.memory_kib,
        iterations: options.iterations,
        parallelism: options.parallelism,
        concurrency: options.threads,
        queue: 0,
    })
    .map_err(|e| e.to_string())?;
    let password = Password::new(std::str::from_utf8(PASSWORD).map_err(|e| e.to_string())?);
    runtime.block_on(async {
        let stored = Arc::new(pool.hash(&password).await.map_err(|e| e.to_string())?);
        let deadline = Instant::now() + Duration::from_secs_f64(options.seconds);
        let started = Instant::now();
        let tasks: Vec<_> = (0..options.threads * 2)
            .map(|_| {
                let (pool, stored, password) = (pool.clone(), stored.clone(), password.clone());
                tokio::spawn(async move {
                    let mut verifies = 0_u64;
                    while Instant::now() < deadline {
                        if let Ok(Verification::Match { .. }) =
                            pool.verify(&password, Some(&stored)).await
                        {
                            verifies += 1;
                        }
                    }
                    verifies
                })
            })
            .collect();
        let mut verifies = 0;
        for task in tasks {
            verifies += task.await.map_err(|e| e.to_string())?;
        }
        let elapsed = started.elapsed().as_secs_f64();
        println!(
            "argon2_rate pool verifies_per_second={:.2} verifies={verifies} threads={} seconds={elapsed:.3} m={} t={} p={}",
            verifies as f64 / elapsed,
            options.threads,
            options.memory_kib,
            options.iterations,
            options.parallelism,
        );
        Ok(())
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        // libtest's listing, as nextest asks for it: one smoke test, nothing ignored.
        if !args.iter().any(|a| a == "--ignored") {
            println!("smoke: test");
        }
        return ExitCode::SUCCESS;
    }
    let result = parse_options().and_then(|options| {
        if options.bench && options.pool {
            run_pool(&options)
        } else if options.bench {
            run(&options)
        } else {
            // Test mode: one small hash verifies, and a wrong password does not.
            let params = Params::new(64, 1, 1, None).map_err(|e| e.to_string())?;
            let stored = stored_hash(params)?;
            let wrong = PasswordHash::new(&stored)
                .is_ok_and(|parsed| Argon2::default().verify_password(b"wrong", &parsed).is_ok());
            if verify(&stored) && !wrong {
                println!("argon2_rate smoke: ok");
                Ok(())
            } else {
                Err("smoke check failed".into())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("argon2_rate: {message}");
            ExitCode::FAILURE
        }
    }
}
