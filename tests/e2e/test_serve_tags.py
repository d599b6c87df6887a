"""POST /predict?tags=true: musicnn's top MSD tags of a real GTZAN clip beside the genre, only when asked."""

import io
import signal

import httpx
import pytest
import soundfile as sf
from helpers.processes import Server

from music_genre_classification.models.musicnn import MSD_TAGS
from music_genre_classification.models.tags import TOP_TAGS


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory):
    server = Server(tmp_path_factory.mktemp("serve_tags"), "--model_path", str(trained["checkpoint"]))
    server.wait_ready()
    yield server
    assert server.stop() in (0, -signal.SIGTERM)


def test_tags_come_only_when_asked(server, real_dataset):
    wave, rate = sf.read(real_dataset / "genres_original" / "metal" / "metal.00000.wav", frames=220500)
    buffer = io.BytesIO()
    sf.write(buffer, wave, rate, format="WAV")
    with httpx.Client(base_url=server.url, timeout=120) as client:
        tagged = client.post("/predict?tags=true", files={"file": ("metal.wav", buffer.getvalue())})
        plain = client.post("/predict", files={"file": ("metal.wav", buffer.getvalue())})
    assert tagged.status_code == 200 and plain.status_code == 200, tagged.text
    tags = tagged.json()["tags"]
    assert len(tags) == TOP_TAGS and {t["tag"] for t in tags} <= set(MSD_TAGS)
    probabilities = [t["probability"] for t in tags]
    assert probabilities == sorted(probabilities, reverse=True) and all(0 <= p <= 1 for p in probabilities)
    assert tagged.json()["genre"] == plain.json()["genre"]
    assert "tags" not in plain.json()
