from collections import Counter

import pytest

from music_genre_classification.data.split import AllTest, ListSplit, RandomSplit, read_artists, read_list


def gtzan_like(per_genre: int = 100) -> dict[str, str]:
    genres = ["blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock"]
    return {f"{g}/{g}.{i:05d}": g for g in genres for i in range(per_genre)}


def test_random_split_is_stratified_70_15_15_by_clip():
    clips = gtzan_like()
    parts = RandomSplit(seed=42).assign(clips)
    assert set(parts) == set(clips)  # every clip in exactly one part
    per_genre = Counter((clips[c], p) for c, p in parts.items())
    for genre in set(clips.values()):
        assert (per_genre[genre, "train"], per_genre[genre, "val"], per_genre[genre, "test"]) == (70, 15, 15)


def test_random_split_is_deterministic_and_seed_dependent():
    clips = gtzan_like(20)
    assert RandomSplit(seed=1).assign(clips) == RandomSplit(seed=1).assign(dict(reversed(clips.items())))
    assert RandomSplit(seed=1).assign(clips) != RandomSplit(seed=2).assign(clips)


def test_random_split_rejects_fractions_not_summing_to_one():
    with pytest.raises(ValueError, match="sum to 1"):
        RandomSplit(train=0.8, val=0.15, test=0.15)


def test_fault_filtered_lists_are_disjoint_and_sized_as_sturm():
    lists = {name: read_list(f"{name}_filtered.txt") for name in ("train", "valid", "test")}
    assert [len(v) for v in lists.values()] == [443, 197, 290]
    assert not set(lists["train"]) & set(lists["valid"]) and not set(lists["test"]) & set(lists["train"])


def test_fault_filtered_without_test_clips_tests_on_valid_list(capsys):
    clips = gtzan_like()
    present = {c: g for c, g in clips.items() if c not in set(read_list("test_filtered.txt"))}
    split = ListSplit("train_filtered.txt", "valid_filtered.txt", "test_filtered.txt", name="fault_filtered")
    parts = split.assign(present)
    assert sorted(c for c, p in parts.items() if p == "test") == sorted(read_list("valid_filtered.txt"))
    train_list = set(read_list("train_filtered.txt"))
    assert {c for c, p in parts.items() if p in ("train", "val")} == train_list
    assert 0.1 < Counter(parts.values())["val"] / len(train_list) < 0.2
    assert "testing on the val list" in capsys.readouterr().out


def test_fault_filtered_val_holds_whole_artists_unseen_in_training():
    clips = {c: c.split("/")[0] for c in read_list("train_filtered.txt") + read_list("valid_filtered.txt")}
    split = ListSplit("train_filtered.txt", "valid_filtered.txt", "test_filtered.txt", artists="GTZANindex.txt")
    parts = split.assign(clips)
    artists = read_artists("GTZANindex.txt")
    assert artists["blues/blues.00000"] == "john lee hooker" and len(artists) > 900
    seen = {part: {artists[c] for c, p in parts.items() if p == part and c in artists} for part in ("train", "val")}
    assert seen["val"] and not seen["val"] & seen["train"]
    val = Counter(clips[c] for c, p in parts.items() if p == "val")
    assert set(val) == set(clips.values()) and 0.1 < sum(val.values()) / 443 < 0.25  # every genre, about 15%
    assert parts == split.assign(dict(reversed(clips.items())))  # deterministic
    for seed in range(10):  # artists of two genres (e.g. a jazz and a classical album) too, whatever the seed
        split.seed = seed
        parts = split.assign(clips)
        seen = {part: {artists[c] for c, p in parts.items() if p == part and c in artists} for part in ("train", "val")}
        assert not seen["val"] & seen["train"], seed


def test_fault_filtered_with_full_gtzan_uses_all_three_lists():
    split = ListSplit("train_filtered.txt", "valid_filtered.txt", "test_filtered.txt")
    counts = Counter(split.assign(gtzan_like()).values())
    assert counts == {"train": 443, "val": 197, "test": 290}


def test_all_split_makes_everything_test():
    assert set(AllTest().assign(gtzan_like(3)).values()) == {"test"}


def test_fault_filtered_folds_cover_the_train_list_once_with_whole_artists():
    clips = {c: c.split("/")[0] for c in read_list("train_filtered.txt") + read_list("valid_filtered.txt")}
    lists = dict(train="train_filtered.txt", val="valid_filtered.txt", test="test_filtered.txt")
    splits = [ListSplit(**lists, artists="GTZANindex.txt", folds=4, fold=k).assign(clips) for k in range(4)]
    vals = [{c for c, p in parts.items() if p == "val"} for parts in splits]
    assert set().union(*vals) == set(read_list("train_filtered.txt")) and sum(map(len, vals)) == 443  # each clip once
    assert all(90 <= len(v) <= 130 and {clips[c] for c in v} == set(clips.values()) for v in vals)  # every genre
    artists = read_artists("GTZANindex.txt")
    for parts, val in zip(splits, vals):
        train = {artists[c] for c, p in parts.items() if p == "train" and c in artists}
        assert not train & {artists[c] for c in val if c in artists}
        assert {c for c, p in parts.items() if p == "test"} == set(read_list("valid_filtered.txt"))
    with pytest.raises(ValueError, match="split.fold must be one of 0..3"):
        ListSplit(**lists, folds=4, fold=4)


def test_random_split_folds_keep_one_test_part_and_cut_the_rest_by_artist():
    clips = gtzan_like(20)
    artists = {c: f"{c.split('/')[0]}-{int(c[-5:]) // 4}" for c in clips}  # 5 artists of 4 clips per genre
    manifest = {"artist": artists}
    splits = [RandomSplit(seed=1, group_by="artist", folds=3, fold=k).assign(clips, manifest) for k in range(3)]
    tests = [{c for c, p in parts.items() if p == "test"} for parts in splits]
    assert tests[0] and tests[0] == tests[1] == tests[2]
    vals = [{c for c, p in parts.items() if p == "val"} for parts in splits]
    assert sum(map(len, vals)) == len(set().union(*vals)) == len(clips) - len(tests[0])
    for parts in splits:
        seen = {part: {artists[c] for c, p in parts.items() if p == part} for part in ("train", "val", "test")}
        assert not seen["val"] & seen["train"] and not seen["test"] & (seen["train"] | seen["val"])


def test_lists_split_takes_given_lists_and_a_null_list_is_an_empty_part(tmp_path):
    (tmp_path / "train.txt").write_text("blues/blues.00001.wav\nrock/rock.00002.mp3\n")
    (tmp_path / "test.txt").write_text("blues/blues.00003\nrock/rock.00004.flac\n")
    split = ListSplit(str(tmp_path / "train.txt"), None, str(tmp_path / "test.txt"), name="lists")
    parts = split.assign(gtzan_like(5))
    assert parts == {
        "blues/blues.00001": "train",
        "rock/rock.00002": "train",
        "blues/blues.00003": "test",
        "rock/rock.00004": "test",
    }
