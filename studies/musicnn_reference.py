"""Reference outputs of the ORIGINAL musicnn (TensorFlow) on real GTZAN clips: tests/fixtures/musicnn_reference.npz.

This script runs under TensorFlow in a scratch environment of its own; the project itself never imports TensorFlow.
It imports musicnn's own code (models.py, extractor.py, configuration.py) from the unpacked 0.1.0 wheel, without
installing it (its pins do not install on Python 3.11):

    pip download --no-deps musicnn==0.1.0 -d /tmp/musicnn-wheel
    mkdir -p /tmp/musicnn-src && unzip -oq /tmp/musicnn-wheel/musicnn-0.1.0-py3-none-any.whl -d /tmp/musicnn-src
    python3 -m venv /tmp/tf && /tmp/tf/bin/pip install "tensorflow-cpu==2.15.*" librosa "numpy<2" soundfile
    /tmp/tf/bin/python -m studies.musicnn_reference /tmp/musicnn-src data/dataset/genres_original

For each clip the log-mel patches come from musicnn's own `batch_data` (librosa.load at 16 kHz, librosa's mel, the
float16 cast and log10(1 + 10000 x) of the original), the first PATCHES of them are kept, and the graph of
`models.define_model` with the checkpoint restored as `extractor` does gives the outputs. All patches go through the
session in one batch, so every patch gets its own penultimate layer (the original extractor repeats patch 0's).
"""

import sys
from pathlib import Path

import numpy as np

CLIPS = ("blues/blues.00000.wav", "classical/classical.00000.wav", "metal/metal.00000.wav")
PATCHES = (2, 1, 1)  # the first 6 s of one clip and 3 s of the others keep the fixture small
OUTPUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "musicnn_reference.npz"


def main(musicnn_src: str, genres_original: str) -> None:
    sys.path.insert(0, musicnn_src)
    import librosa
    import tensorflow as tf
    from musicnn import configuration as config
    from musicnn import extractor, models

    n_frames = librosa.time_to_frames(3, sr=config.SR, n_fft=config.FFT_SIZE, hop_length=config.FFT_HOP) + 1
    patches = []
    for clip, count in zip(CLIPS, PATCHES):
        batch, spectrogram = extractor.batch_data(str(Path(genres_original) / clip), n_frames, n_frames)
        print(clip, batch.dtype, batch.shape, "max", np.max(spectrogram), "infinite", np.isinf(spectrogram).sum())
        patches.append(batch[:count])
    # (patches, 187, 96) float32: under numpy < 2 the float16 mel power times 10000 is computed in float32
    mel = np.concatenate(patches)
    arrays = {
        "clips": np.array(CLIPS),
        "mel": mel,
        "clip_index": np.repeat(np.arange(len(CLIPS)), PATCHES),  # the clip of each patch
        "versions": np.array([f"{m.__name__} {m.__version__}" for m in (tf, librosa, np)]),
    }
    for model in ("MSD_musicnn", "MTT_musicnn"):
        tf.compat.v1.reset_default_graph()
        with tf.name_scope("model"):
            x = tf.compat.v1.placeholder(tf.float32, [None, n_frames, config.N_MELS])
            is_training = tf.compat.v1.placeholder(tf.bool)
            y, _, _, _, _, _, mean_pool, max_pool, penultimate = models.define_model(x, is_training, model, 50)
            tags = tf.nn.sigmoid(y)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.train.Saver().restore(sess, str(Path(models.__file__).parent / model) + "/")
            out = sess.run([tags, penultimate, max_pool, mean_pool], feed_dict={x: mel, is_training: False})
        key = model.split("_")[0].lower()
        for name, value in zip(("tags", "penultimate", "max_pool", "mean_pool"), out):
            arrays[f"{key}_{name}"] = value.astype(np.float32)
        print(model, "top tags of patch 0:", np.argsort(-out[0][0])[:5])
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUTPUT, **arrays)
    print(OUTPUT, OUTPUT.stat().st_size, "bytes")


if __name__ == "__main__":
    main(*sys.argv[1:3])
