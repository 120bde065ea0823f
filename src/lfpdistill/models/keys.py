"""The key under which a checkpoint (and a packed model read back) holds lfpdistill's metadata;
its own module so that reading checkpoints and reading packed folders need not import each
other."""

CKPT_KEY = "lfpdistill"
