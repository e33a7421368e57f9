"""Config keys with a meaning of their own to us (a module that imports nothing, so that suite
parsing and record readers can use them without importing RecBole); :mod:`recbole_ext.config`
re-exports them."""

#: Config keys whose values name files or folders (RecBole's, RecBole models' pre-trained weights, ours).
#: A relative value means the directory the command was run from, ``~`` is the home folder: the
#: runner resolves them (:func:`recbole_ext.config.resolve_paths`) before it moves into the run's artifacts folder.
PATH_KEYS = (
    "data_path", "checkpoint_dir", "dataset_save_path", "dataloaders_save_path",
    "pre_model_path", "pretrain_path", "mf_pretrain_path", "mlp_pretrain_path",
    "sid_path", "sid_cache_dir", "stage_cache_dir", "text_encoder",
)
#: Keys that only say where a run writes, runs and logs (output and cache folders, device, logging):
#: they never change what is trained, so a record's ``config_hash`` and the stage-cache keys leave them out.
RUN_LOCAL_KEYS = frozenset({
    "checkpoint_dir", "data_path", "dataset_save_path", "dataloaders_save_path", "sid_cache_dir", "stage_cache_dir",
    "device", "gpu_id", "use_gpu", "show_progress", "state", "worker",
    # RecBole's keys of a distributed run (absent in a single process): how a run is spread over processes
    "nproc", "world_size", "offset", "ip", "port",
})
#: Of :data:`PATH_KEYS`, those that only say where data is read from or written to (not what it is):
#: a suite's cell id leaves them out, so it is the same on every machine.
LOCATION_KEYS = tuple(k for k in PATH_KEYS if k in RUN_LOCAL_KEYS)
#: Of :data:`PATH_KEYS`, those that may name a Hugging Face hub model instead: a relative value is a
#: path only when it starts with "." or names an existing folder (else it stays a hub name).
HUB_OR_PATH_KEYS = ("text_encoder",)
