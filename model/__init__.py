"""llm-from-zero's language models: a pure PyTorch library (no Kafka, no database, no storage, no I/O).

    config       ModelConfig, TrainConfig, PRESETS, resolve_hyperparameters, ConfigError
    tokenizers   train_tokenizer("char" | "word" | "bpe", text), tokenizer_from_json
    gpt          GPT: the decoder-only transformer
    kv_cache     KVCache: keys and values kept between decoding steps
    data         prepare_corpus, BatchSampler
    optim        AdamW / Muon and the learning-rate schedule
    trainer      Trainer(...).run() reporting through callbacks
    checkpoint   pack_checkpoint / unpack_checkpoint (bytes with a SHA-256), load_model
    generate     SamplingParams, Generator.stream / Generator.generate
    engine       Engine: continuous batching, every generation of a model in one forward pass per token
    evaluate     evaluate(model, tokenizer, held_out_text, prompts) -> JSON-serialisable report
    export/      hf_files, gguf_bytes (a checkpoint for transformers and llama.cpp), state_from_hf (and back)
    device       pick_device, configure_threads, keep_freed_memory
    bench        python -m bench.model train|generate
"""
