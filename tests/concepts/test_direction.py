"""ConceptDirection: additive steering as a LobiReFT, comparisons, and the safetensors + JSON folder."""

import json

import pytest
import torch
from helpers import no_hooks_anywhere

import reftlab
from reftlab.analysis import compare, principal_angles
from reftlab.concepts import ConceptDirection, load_directions, save_directions
from reftlab.sites import Site

HOOK = "blocks.1.hook_resid_post"
SITE = Site(hook=HOOK)


def _direction(d_model=64, seed=0, **kw):
    v = torch.randn(d_model, generator=torch.Generator().manual_seed(seed))
    return ConceptDirection(concept="cats", method="diffmean", site=SITE, reading=v, basis=v, scale=2.5, **kw)


def test_the_intervention_is_additive_steering_and_alpha_zero_is_the_identity():
    d = _direction()
    h = torch.randn(3, 5, 64)
    torch.testing.assert_close(d.intervention(1.5)(h), h + 1.5 * 2.5 * d.reading, rtol=1e-5, atol=1e-5)
    assert torch.equal(d.intervention(0.0)(h), h)
    assert d.intervention(1.0).kind == "lobireft" and d.intervention(1.0).rank == 1


def test_alpha_zero_reft_model_equals_the_untouched_model(tok):
    hf = reftlab.tiny_llama()
    hooked = reftlab.load_model(hf, tok)
    enc = tok(["hello there", "a b"], return_tensors="pt", padding=True)
    with torch.no_grad():
        want = hf(**enc).logits
        reft = _direction().reft_model(hooked, 0.0)
        got = reft.run(**enc).logits
        moved = _direction().reft_model(hooked, 3.0).run(**enc).logits
    assert torch.equal(got, want)
    assert not torch.allclose(moved, want)
    out = reftlab.generate(reft, ["hello"], max_new_tokens=6)
    plain = reftlab.generate(hooked, ["hello"], max_new_tokens=6)
    assert out.ids[0].tolist() == plain.ids[0].tolist()
    assert no_hooks_anywhere(hooked)


def test_directions_compare_like_subspaces():
    a, b = _direction(seed=0), _direction(seed=1)
    table = compare({"a": a, "b": b, "a twice": a.subspace() * 2})
    row = table[(table.a == "a") & (table.b == "a twice")].iloc[0]
    assert row.overlap == pytest.approx(1.0)
    cos = float(a.reading @ b.reading)
    assert float(principal_angles(a, b)[0]) == pytest.approx(
        float(torch.rad2deg(torch.arccos(torch.tensor(abs(cos))))), abs=1e-3
    )


@pytest.mark.user_errors
def test_bad_directions_are_refused():
    with pytest.raises(ValueError, match="zero or not finite"):
        ConceptDirection(concept="c", method="m", site=SITE, reading=torch.zeros(4), basis=torch.ones(4))
    with pytest.raises(ValueError, match="reading must be"):
        ConceptDirection(concept="c", method="m", site=SITE, reading=torch.ones(4), basis=torch.ones(5))
    with pytest.raises(ValueError, match="scale"):
        ConceptDirection(concept="c", method="m", site=SITE, reading=torch.ones(4), basis=torch.ones(4), scale=0)


def test_save_and_load_round_trip_with_the_base_models_identity(tmp_path, tok):
    hooked = reftlab.load_model(reftlab.tiny_llama(), tok)
    basis = torch.randn(3, 64)
    dirs = [
        _direction(metadata={"norm": 1.25}),
        ConceptDirection(concept="dogs", method="subspace:ckpt", site=SITE, reading=basis[0], basis=basis, scale=1.0),
    ]
    folder = save_directions(dirs, tmp_path / "dirs", model=hooked)
    assert sorted(p.name for p in folder.iterdir()) == ["directions.json", "directions.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    back = load_directions(folder, model=hooked)
    for a, b in zip(dirs, back):
        assert (a.concept, a.method, a.site, a.scale, a.metadata) == (b.concept, b.method, b.site, b.scale, b.metadata)
        assert torch.equal(a.reading, b.reading) and torch.equal(a.basis, b.basis)
    other = reftlab.load_model(reftlab.tiny_llama(d_model=32), tok)
    with pytest.raises(ValueError, match="d_model"):
        load_directions(folder, model=other)


def test_broken_folders_give_clear_errors(tmp_path):
    folder = save_directions([_direction()], tmp_path / "dirs")
    meta = folder / "directions.json"
    data = json.loads(meta.read_text())
    meta.write_text(json.dumps({**data, "format_version": 99}))
    with pytest.raises(ValueError, match="newer than this reftlab reads"):
        load_directions(folder)
    data["directions"][0]["extra"] = 1
    meta.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="exactly the fields"):
        load_directions(folder)
    meta.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_directions(folder)
    (folder / "directions.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="directions.safetensors is missing"):
        load_directions(folder)
    with pytest.raises(ValueError, match="no directions"):
        save_directions([], tmp_path / "none")
