//! The wall between training and evaluation: the trainer never calls the evaluation
//! sampler, and its question stream never yields a question of the evaluation or
//! validation slice. (Training questions and evaluation questions therefore cannot
//! overlap; `ponder-arith report` also counts the overlap on the data it measures.)

use ponder_arith::slice::{slice_of, Slice};
use ponder_arith::task;
use ponder_arith_train::train::data::{sample_batch, DEFAULT_LEVEL_MIX};
use rand::SeedableRng;
use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_trainer_never_calls_the_evaluation_sampler() {
    let train_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/train");
    let mut files = Vec::new();
    rust_files(&train_dir, &mut files);
    assert!(
        files.len() >= 5,
        "expected the trainer's sources in {}",
        train_dir.display()
    );
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for name in ["eval_sampler", "eval_question", "eval_set"] {
            assert!(
                !text.contains(name),
                "{} mentions {name}: the trainer must never see evaluation questions",
                file.display()
            );
        }
    }
}

#[test]
fn the_training_stream_never_yields_evaluation_or_validation_questions() {
    let mut seen = 0;
    for seed in 0..200u64 {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        // Both parts of the mixture: the shipped stream and the contract style.
        let mix = task::TrainingMix::new(f64::from(seed as u8 % 2) * 0.5).unwrap();
        for ex in sample_batch(&mut rng, DEFAULT_LEVEL_MIX, mix, 0.2, 2048).unwrap() {
            let question = ex.prompt.lines().next().unwrap().trim_start_matches("Q: ");
            let slice = slice_of(&task::parse(question).unwrap());
            assert_eq!(
                slice,
                Slice::Training,
                "{question} is in the {slice:?} slice"
            );
            seen += 1;
        }
    }
    assert!(seen > 1_000, "only {seen} questions checked");
}
