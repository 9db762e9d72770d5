use super::*;

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn write_model(root: &Path, dir: &str, weights: &[u8]) -> String {
    std::fs::create_dir_all(root.join(dir)).unwrap();
    std::fs::write(root.join(dir).join("model.safetensors"), weights).unwrap();
    sha256_file(&root.join(dir).join("model.safetensors")).unwrap()
}

fn entry(name: &str, role: ModelRole, default: bool, sha: &str) -> serde_json::Value {
    serde_json::json!({
        "name": name, "role": role, "dir": name, "parameters": 1000,
        "training_flops": 6e9, "default": default,
        "sha256": {"model.safetensors": sha},
    })
}

fn write_manifest(root: &Path, models: Vec<serde_json::Value>) {
    let text = serde_json::json!({"format": 1, "models": models}).to_string();
    std::fs::write(root.join(MANIFEST_FILE), text).unwrap();
}

fn open_err(root: &Path) -> String {
    ModelsDir::open(root).unwrap_err().to_string()
}

#[test]
fn the_shipped_models_directory_resolves_and_verifies() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
    let dir = ModelsDir::open(&root).unwrap();
    assert!(dir.has_manifest_file, "models/ ships a {MANIFEST_FILE}");
    for role in [ModelRole::Generator, ModelRole::Verifier] {
        let model = dir.select(role, None).unwrap();
        assert!(!model.sha256.is_empty(), "{}: no digests", model.name);
        assert!(
            model.sha256.contains_key("model.safetensors"),
            "{}",
            model.name
        );
        dir.verify(model).unwrap();
        assert!(
            model.parameters > 0 && model.training_flops > 0.0,
            "{model:?}"
        );
    }
}

#[test]
fn a_manifest_picks_the_default_or_the_named_model() {
    let tmp = scratch();
    let root = tmp.path();
    let a = write_model(root, "gen-a", b"a");
    let b = write_model(root, "gen-b", b"b");
    let p = write_model(root, "prm", b"p");
    write_manifest(
        root,
        vec![
            entry("gen-a", ModelRole::Generator, false, &a),
            entry("gen-b", ModelRole::Generator, true, &b),
            entry("prm", ModelRole::Verifier, false, &p),
        ],
    );
    let g = resolve_model_path(root, ModelRole::Generator, None).unwrap();
    assert_eq!(g, root.join("gen-b"));
    let g = resolve_model_path(root, ModelRole::Generator, Some("gen-a")).unwrap();
    assert_eq!(g, root.join("gen-a"));
    // The only verifier is the verifier default even when not marked.
    assert_eq!(
        resolve_model_path(root, ModelRole::Verifier, None).unwrap(),
        root.join("prm")
    );
    let err = resolve_model_path(root, ModelRole::Verifier, Some("gen-a"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("gen-a is a generator model, not a verifier"),
        "{err}"
    );
    let err = resolve_model_path(root, ModelRole::Generator, Some("gen-z"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no model named \"gen-z\"") && err.contains("gen-a, gen-b"),
        "{err}"
    );
}

#[test]
fn a_changed_file_is_refused() {
    let tmp = scratch();
    let root = tmp.path();
    let sha = write_model(root, "gen", b"weights");
    write_manifest(root, vec![entry("gen", ModelRole::Generator, true, &sha)]);
    resolve_model_path(root, ModelRole::Generator, None).unwrap();
    std::fs::write(root.join("gen/model.safetensors"), b"tampered").unwrap();
    let err = resolve_model_path(root, ModelRole::Generator, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("refusing to serve") && err.contains(&sha),
        "{err}"
    );
    // A listed file that is missing is an error too, not a silent pass.
    std::fs::remove_file(root.join("gen/model.safetensors")).unwrap();
    let err = resolve_model_path(root, ModelRole::Generator, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.safetensors"), "{err}");
}

#[test]
fn the_legacy_layout_reads_as_a_manifest_without_digests() {
    let tmp = scratch();
    let root = tmp.path();
    write_model(root, LEGACY_GENERATOR_DIR, b"g");
    write_model(root, LEGACY_VERIFIER_DIR, b"v");
    let dir = ModelsDir::open(root).unwrap();
    assert!(!dir.has_manifest_file);
    assert_eq!(
        resolve_model_path(root, ModelRole::Generator, None).unwrap(),
        root.join(LEGACY_GENERATOR_DIR)
    );
    assert_eq!(
        resolve_model_path(root, ModelRole::Verifier, None).unwrap(),
        root.join(LEGACY_VERIFIER_DIR)
    );
}

#[test]
fn a_single_model_is_served_as_given() {
    let tmp = scratch();
    let model = tmp.path().join("one-model");
    write_model(tmp.path(), "one-model", b"w");
    assert_eq!(
        resolve_model_path(&model, ModelRole::Generator, None).unwrap(),
        model
    );
    let gguf = tmp.path().join("m.gguf");
    assert_eq!(
        resolve_model_path(&gguf, ModelRole::Generator, None).unwrap(),
        gguf
    );
    let err = resolve_model_path(&model, ModelRole::Generator, Some("x"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("needs --model to be a models directory"),
        "{err}"
    );
}

#[test]
fn malformed_manifests_are_refused_with_what_to_fix() {
    let tmp = scratch();
    let root = tmp.path();
    let sha = write_model(root, "g", b"g");
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (
            serde_json::json!({"format": 2, "models": []}),
            "format 2 is not supported",
        ),
        (
            serde_json::json!({"format": 1, "models": [entry("g", ModelRole::Generator, true, &sha), entry("g", ModelRole::Generator, false, &sha)]}),
            "listed twice",
        ),
        (
            serde_json::json!({"format": 1, "models": [{"name": "g", "role": "generator", "dir": "../g", "parameters": 1, "training_flops": 1.0}]}),
            "must be a path inside",
        ),
        (
            serde_json::json!({"format": 1, "models": [{"name": "g", "role": "generator", "dir": "g", "parameters": 1, "training_flops": 1.0, "sha256": {"model.safetensors": "ABC"}}]}),
            "not 64 lowercase hex",
        ),
        (
            serde_json::json!({"format": 1, "models": [{"name": "g", "role": "generator", "dir": "g", "parameters": 1, "training_flops": 1.0, "sha256": {"../other/model.safetensors": sha}}]}),
            "a relative path without ..",
        ),
        (
            serde_json::json!({"format": 1, "models": [{"name": "g", "role": "critic", "dir": "g", "parameters": 1, "training_flops": 1.0}]}),
            "unknown variant `critic`",
        ),
        (
            serde_json::json!({"format": 1, "models": [{"name": "g", "role": "generator", "dir": "g", "parameters": 1, "training_flops": 1.0, "sha": {}}]}),
            "unknown field `sha`",
        ),
        (
            serde_json::json!({"format": 1, "models": [{"name": "g", "role": "generator", "dir": "missing", "parameters": 1, "training_flops": 1.0}]}),
            "does not exist",
        ),
        (
            serde_json::json!({"format": 1, "models": []}),
            "no generator is marked",
        ),
    ];
    for (manifest, expected) in cases {
        std::fs::write(root.join(MANIFEST_FILE), manifest.to_string()).unwrap();
        let err = open_err(root);
        assert!(err.contains(expected), "{manifest}: {err}");
        assert!(
            err.contains(MANIFEST_FILE),
            "the error names the file: {err}"
        );
    }
    // Two defaults for one role.
    let h = write_model(root, "h", b"h");
    write_manifest(
        root,
        vec![
            entry("g", ModelRole::Generator, true, &sha),
            entry("h", ModelRole::Generator, true, &h),
        ],
    );
    assert!(open_err(root).contains("2 models are marked default for the generator role"));
    // Not a models directory at all.
    let empty = scratch();
    assert!(open_err(empty.path()).contains("not a models directory"));
}

/// A verifier ensemble loads its members' weights from subdirectories: the manifest must
/// hash them, and a changed member is refused like any other changed file.
#[test]
fn an_ensemble_members_weights_must_be_hashed_and_unchanged() {
    let tmp = scratch();
    let root = tmp.path();
    let gen = write_model(root, "gen", b"gen");
    let prm = write_model(root, "prm", b"prm");
    let member = write_model(root, "prm/second", b"second");
    std::fs::write(root.join("prm/second/config.json"), b"{}").unwrap();
    let member_config = sha256_file(&root.join("prm/second/config.json")).unwrap();
    std::fs::write(
        root.join("prm/prm.json"),
        br#"{"kind": "likelihood", "members": ["second"]}"#,
    )
    .unwrap();
    let prm_json = sha256_file(&root.join("prm/prm.json")).unwrap();
    let verifier = |with_member: bool| {
        let mut e = entry("prm", ModelRole::Verifier, true, &prm);
        e["sha256"]["prm.json"] = prm_json.clone().into();
        if with_member {
            e["sha256"]["second/model.safetensors"] = member.clone().into();
            e["sha256"]["second/config.json"] = member_config.clone().into();
        }
        e
    };
    let generator = entry("gen", ModelRole::Generator, true, &gen);

    write_manifest(root, vec![generator.clone(), verifier(false)]);
    let err = resolve_model_path(root, ModelRole::Verifier, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ensemble member \"second\"") && err.contains("second/config.json"),
        "{err}"
    );

    write_manifest(root, vec![generator, verifier(true)]);
    assert_eq!(
        resolve_model_path(root, ModelRole::Verifier, None).unwrap(),
        root.join("prm")
    );
    std::fs::write(root.join("prm/second/model.safetensors"), b"swapped").unwrap();
    let err = resolve_model_path(root, ModelRole::Verifier, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("refusing to serve") && err.contains(&member),
        "{err}"
    );
}

#[test]
fn a_manifest_entry_sets_the_kv_cache_dtype_of_the_model_it_resolves_or_holds() {
    use ponder_engine::KvDtype;
    let tmp = scratch();
    let root = tmp.path();
    let a = write_model(root, "gen-a", b"a");
    let b = write_model(root, "gen-b", b"b");
    let mut half = entry("gen-a", ModelRole::Generator, true, &a);
    half["kv_cache"] = serde_json::json!("f16");
    write_manifest(
        root,
        vec![half, entry("gen-b", ModelRole::Generator, false, &b)],
    );
    let through = |name| resolve_model(root, ModelRole::Generator, name).unwrap();
    assert_eq!(through(None).kv_cache, Some(KvDtype::F16));
    assert_eq!(through(Some("gen-b")).kv_cache, None);
    // A model directory inside the models directory, as `ponder up` starts it.
    let held = resolve_model(&root.join("gen-a"), ModelRole::Generator, None).unwrap();
    assert_eq!(
        (held.path, held.kv_cache),
        (root.join("gen-a"), Some(KvDtype::F16))
    );
    // One outside any models directory says nothing.
    let lone = scratch();
    write_model(lone.path(), "m", b"m");
    let m = resolve_model(&lone.path().join("m"), ModelRole::Generator, None).unwrap();
    assert_eq!(m.kv_cache, None);
    // A value the engine does not know is refused when the manifest is read.
    let mut bad = entry("gen-a", ModelRole::Generator, true, &a);
    bad["kv_cache"] = serde_json::json!("int4");
    write_manifest(root, vec![bad]);
    assert!(open_err(root).contains("int4"), "{}", open_err(root));
}

#[test]
fn a_manifest_entry_sets_the_weight_quantization_of_the_model_it_resolves_or_holds() {
    use ponder_engine::Quantize;
    let tmp = scratch();
    let root = tmp.path();
    let a = write_model(root, "prm-a", b"a");
    let b = write_model(root, "gen-b", b"b");
    let mut bf16 = entry("prm-a", ModelRole::Verifier, true, &a);
    bf16["quantize"] = serde_json::json!("bf16");
    write_manifest(
        root,
        vec![bf16, entry("gen-b", ModelRole::Generator, true, &b)],
    );
    let prm = resolve_model(root, ModelRole::Verifier, None).unwrap();
    assert_eq!(prm.quantize, Some(Quantize::Bf16));
    assert_eq!(
        resolve_model(root, ModelRole::Generator, None)
            .unwrap()
            .quantize,
        None
    );
    // In-process loads (`ponder eval`, the benchmarks) follow the entry as a node does.
    assert_eq!(
        serving_options(&root.join("prm-a")).quantize,
        Quantize::Bf16
    );
    assert_eq!(
        serving_options(&root.join("gen-b")).quantize,
        Quantize::None
    );
    // A value the engine does not know is refused when the manifest is read.
    let mut bad = entry("prm-a", ModelRole::Verifier, true, &a);
    bad["quantize"] = serde_json::json!("int3");
    write_manifest(
        root,
        vec![bad, entry("gen-b", ModelRole::Generator, true, &b)],
    );
    assert!(open_err(root).contains("int3"), "{}", open_err(root));
}

#[test]
fn each_verifier_gets_the_policies_fitted_with_it() {
    let tmp = scratch();
    let root = tmp.path();
    let g = write_model(root, "gen", b"g");
    let big = write_model(root, "prm-big", b"b");
    let small = write_model(root, "prm-small", b"s");
    let other = write_model(root, "prm-other", b"o");
    let mut small_entry = entry("prm-small", ModelRole::Verifier, false, &small);
    small_entry["policy"] = "small-policy.json".into();
    small_entry["ladder_policy"] = "small-ladder.json".into();
    let text = serde_json::json!({
        "format": 1,
        "policy": "big-policy.json",
        "ladder_policy": "big-ladder.json",
        "models": [
            entry("gen", ModelRole::Generator, true, &g),
            entry("prm-big", ModelRole::Verifier, true, &big),
            small_entry,
            entry("prm-other", ModelRole::Verifier, false, &other),
        ],
    });
    std::fs::write(root.join(MANIFEST_FILE), text.to_string()).unwrap();
    let dir = ModelsDir::open(root).unwrap();
    let of = |name: &str| dir.policies_for(dir.by_name(name));
    // The default verifier keeps the top-level files (the layout before the tie).
    assert_eq!(
        of("prm-big"),
        (Some("big-policy.json"), Some("big-ladder.json"))
    );
    assert_eq!(
        dir.policies_for(None),
        (Some("big-policy.json"), Some("big-ladder.json"))
    );
    // A verifier with its own files gets them, never the default's.
    assert_eq!(
        of("prm-small"),
        (Some("small-policy.json"), Some("small-ladder.json"))
    );
    // One with none gets none: the default's thresholds were fitted on other scores.
    assert_eq!(of("prm-other"), (None, None));
}

#[test]
fn a_policy_on_a_generator_or_outside_the_directory_is_refused() {
    let tmp = scratch();
    let root = tmp.path();
    let g = write_model(root, "gen", b"g");
    let p = write_model(root, "prm", b"p");
    let mut gen = entry("gen", ModelRole::Generator, true, &g);
    gen["policy"] = "policy.json".into();
    write_manifest(root, vec![gen, entry("prm", ModelRole::Verifier, true, &p)]);
    let err = open_err(root);
    assert!(
        err.contains("gen: policy belongs on a verifier's entry"),
        "{err}"
    );

    let mut prm = entry("prm", ModelRole::Verifier, true, &p);
    prm["ladder_policy"] = "../elsewhere.json".into();
    write_manifest(
        root,
        vec![entry("gen", ModelRole::Generator, true, &g), prm],
    );
    let err = open_err(root);
    assert!(
        err.contains(
            "prm: ladder_policy \"../elsewhere.json\" must be a file in the models directory"
        ),
        "{err}"
    );
}

#[test]
fn a_policy_whose_digest_differs_is_refused_and_an_unlisted_one_is_taken() {
    let tmp = scratch();
    let root = tmp.path();
    let g = write_model(root, "gen", b"g");
    let p = write_model(root, "prm", b"p");
    std::fs::write(root.join("policy.json"), b"{\"probes\": 4}").unwrap();
    std::fs::write(root.join("other.json"), b"{}").unwrap();
    let digest = sha256_file(&root.join("policy.json")).unwrap();
    let text = serde_json::json!({
        "format": 1,
        "models": [entry("gen", ModelRole::Generator, true, &g), entry("prm", ModelRole::Verifier, true, &p)],
        "sha256": {"policy.json": digest},
    });
    std::fs::write(root.join(MANIFEST_FILE), text.to_string()).unwrap();
    let dir = ModelsDir::open(root).unwrap();
    dir.verify_root_file("policy.json").unwrap();
    dir.verify_root_file("other.json").unwrap(); // no digest listed: an older manifest
    std::fs::write(root.join("policy.json"), b"{\"probes\": 8}").unwrap();
    let err = dir.verify_root_file("policy.json").unwrap_err().to_string();
    assert!(
        err.contains("refusing to use it") && err.contains(&digest),
        "{err}"
    );

    for (key, value, says) in [
        (
            "sub/policy.json",
            digest.as_str(),
            "must be a file at the root",
        ),
        ("policy.json", "ABC", "is not 64 lowercase hex digits"),
    ] {
        let mut bad = text.clone();
        bad["sha256"] = serde_json::json!({ key: value });
        std::fs::write(root.join(MANIFEST_FILE), bad.to_string()).unwrap();
        let err = open_err(root);
        assert!(err.contains(says), "{key}: {err}");
    }
}
