"""The glass box: the logit lens, attention weights from the paged pool, the probe inside a running engine, and the
engine's step recorder (tiny random models; the real model is exercised by the browser test)."""

from __future__ import annotations

import pytest
import torch
from engine_fixtures import TINY, IdTokenizer, run_all, tiny_engine, tiny_model

from lucid.engine.recorder import pool_snapshot
from lucid.glassbox.attention import read_attention
from lucid.glassbox.in_engine import probe_in_engine
from lucid.glassbox.lens import lens_logits, read_lens
from lucid.glassbox.standalone import probe_sequence
from lucid.sampling_params import SamplingParams

pytestmark = pytest.mark.timeout(120)

IDS = [5, 17, 99, 3, 42, 42, 7, 64, 1, 88, 23, 9, 31]


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def test_lens_at_the_last_layer_equals_the_models_logits(model):
    probe = probe_sequence(model, IDS)
    assert probe.residuals.shape == (TINY.num_hidden_layers + 1, TINY.hidden_size)
    with torch.no_grad():
        logits = model(torch.tensor([IDS]))[0, -1]                              # (V,) the plain causal forward
    torch.testing.assert_close(lens_logits(model, probe.residuals)[-1], logits, rtol=1e-5, atol=1e-5)
    lens = read_lens(model, IdTokenizer(), probe.residuals, token_id=int(logits.argmax()), position=len(IDS))
    assert len(lens.rows) == TINY.num_hidden_layers + 1 and lens.rows[0].label == "embedding"
    last = lens.rows[-1]
    assert last.rank == 1 and last.top[0].token_id == int(logits.argmax())
    assert last.prob == pytest.approx(float(logits.softmax(-1).max()), abs=1e-6)
    for row in lens.rows:  # the chosen token's rank agrees with where it sits among the row's top tokens
        ids = [c.token_id for c in row.top]
        assert (row.rank <= len(ids)) == (lens.token_id in ids)


def test_attention_weights_are_a_distribution_over_earlier_positions(model):
    probe = probe_sequence(model, IDS)
    att = probe.attention                                                       # (layers, heads, P + 1)
    assert att.shape == (TINY.num_hidden_layers, TINY.num_attention_heads, len(IDS))
    assert bool((att >= 0).all())
    torch.testing.assert_close(att.sum(-1), torch.ones(att.shape[:2]), rtol=0, atol=1e-5)
    view = read_attention(att, [f"[{i}]" for i in IDS], TINY.num_key_value_heads)
    assert view.position == len(IDS) - 1 and view.group == 2 and len(view.layers) == TINY.num_hidden_layers
    assert all(s.position <= view.position for s in view.top)
    assert view.top == sorted(view.top, key=lambda s: -s.weight)


def test_attention_equals_transformers_eager_reference(tiny_model):
    transformers = pytest.importorskip("transformers")
    from lucid import LLM

    ours = LLM(str(tiny_model.hf_dir), dtype="float32", enforce_eager=True).model
    ref = transformers.AutoModelForCausalLM.from_pretrained(str(tiny_model.hf_dir), dtype=torch.float32,
                                                            attn_implementation="eager")
    ids = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    with torch.no_grad():
        out = ref(torch.tensor([ids]), output_attentions=True, output_hidden_states=True)
    expected = torch.stack([a[0, :, -1, :] for a in out.attentions])          # (layers, heads, T)
    probe = probe_sequence(ours, ids)
    torch.testing.assert_close(probe.attention, expected, rtol=1e-4, atol=1e-5)
    # The lens's residuals are HF's hidden states (its last one is after the final norm: compare the logits).
    torch.testing.assert_close(probe.residuals[:-1], torch.stack([h[0, -1] for h in out.hidden_states[:-1]]),
                               rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(lens_logits(ours, probe.residuals)[-1], out.logits[0, -1], rtol=1e-4, atol=1e-4)


def test_probe_in_the_engine_reuses_the_cached_prefix_and_matches_standalone(model):
    engine = tiny_engine(model)
    params = SamplingParams(temperature=0.0, max_tokens=6)
    [out] = run_all(engine, [IDS], params)
    full = IDS + out.outputs[0].token_ids
    got = probe_in_engine(engine, full[:-1], prompt_len=len(IDS))   # the query that chose the last token
    assert got.reused_tokens >= 12 and got.reused_tokens + got.computed_tokens == len(full) - 1
    assert engine.blocks.num_used_blocks == 0       # the probe gave its blocks back
    alone = probe_sequence(model, full[:-1])
    torch.testing.assert_close(got.probe.attention, alone.attention, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got.probe.residuals, alone.residuals, rtol=1e-4, atol=1e-4)
    # The lens's last row chose what the engine chose (greedy).
    assert int(lens_logits(model, got.probe.residuals, got.probe.norm)[-1].argmax()) == full[-1]
    lens = read_lens(model, IdTokenizer(), got.probe.residuals, full[-1], len(full) - 1, norm=got.probe.norm)
    assert lens.rows[-1].rank == 1


def test_recording_leaves_tokens_identical_and_records_the_steps(model):
    prompts = [IDS, IDS[:5] + [2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28], [9, 8, 7]]
    params = SamplingParams(temperature=0.8, seed=3, max_tokens=8)
    off = tiny_engine(model, max_num_batched_tokens=8)
    plain = [o.outputs[0].token_ids for o in run_all(off, prompts, params)]
    assert off.recorder.since(0)[1] == []           # nobody watched: nothing kept
    on = tiny_engine(model, max_num_batched_tokens=8)
    on.recorder.idle_after = 600.0                  # one watch() covers the whole run, however loaded the machine
    on.recorder.watch()
    watched = [o.outputs[0].token_ids for o in run_all(on, prompts, params)]
    assert watched == plain
    newest, records = on.recorder.since(0)
    assert len(records) == on.num_steps and newest == records[-1]["id"]
    kinds = {(i["request_id"], i["kind"]) for r in records for i in r["items"]}
    assert {("r0", "prefill"), ("r0", "decode"), ("r1", "prefill"), ("r2", "decode")} <= kinds
    # The 19-token prompt cannot fit one 8-token step: several prefill chunks, with others decoding in between.
    chunks = [r for r in records if any(i["request_id"] == "r1" and i["kind"] == "prefill" for i in r["items"])]
    assert len(chunks) >= 3 and any(i["kind"] == "decode" for r in chunks for i in r["items"])
    assert on.recorder.since(newest)[1] == []
    on.recorder.idle_after = 0.0                    # the page closed: the next step stops the recording
    on.recorder.watch()
    run_all(on, [[1, 2, 3]], params)
    assert not on.recorder.watching


def test_pool_snapshot_shows_shared_prefix_blocks(model):
    engine = tiny_engine(model)                     # block size 4
    shared = list(range(1, 17))                     # 16 tokens = 4 full blocks
    params = SamplingParams(temperature=0.0, max_tokens=20, ignore_eos=True)
    engine.add_request("a", shared + [30], params)
    engine.step()                                   # a's prompt is computed and its full blocks published
    engine.add_request("b", shared + [40], params)
    engine.step()
    snap = pool_snapshot(engine.scheduler, engine.blocks)
    shared_blocks = [b for b in snap["used"] if b["ref_count"] == 2]
    assert len(shared_blocks) == 4 and all(sorted(b["owners"]) == ["a#0", "b#0"] for b in shared_blocks)
    while engine.has_unfinished():
        engine.step()
    snap = pool_snapshot(engine.scheduler, engine.blocks)
    assert snap["used"] == [] and snap["num_free"] == snap["num_blocks"] and len(snap["cached_free"]) >= 4


def test_trace_lens_and_attention(tiny_model, capsys):
    import json

    from lucid.cli import main

    args = ["trace", "Hello there", "--model", str(tiny_model.hf_dir), "--dtype", "float32", "-q", "none",
            "--temperature", "0", "--steps", "3", "--lens", "--attention"]
    assert main([*args, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    looks = data["glassbox"]
    assert [g["step"] for g in looks] == list(range(len(data["steps"])))
    for step, look in zip(data["steps"], looks, strict=True):
        last = look["lens"]["rows"][-1]
        assert last["top"][0]["token_id"] == step["chosen_id"] and last["rank"] == 1
        assert last["prob"] == pytest.approx(step["chosen_prob"], abs=1e-5)   # the lens ends where the step did
        att = look["attention"]
        assert att["position"] == len(data["prompt_ids"]) + step["index"] - 1
        assert all(sum(layer["mean"]) == pytest.approx(1.0, abs=1e-3) for layer in att["layers"])
    assert main(args) == 0
    human = capsys.readouterr().out
    assert "logit lens for" in human and "embedding (rough)" in human and "where position" in human
