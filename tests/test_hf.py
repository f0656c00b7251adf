"""The Hugging Face adapter (extra ``hf``): an export loads with AutoModelForCausalLM / AutoTokenizer, greedy
``generate`` equals the project's own decoding token for token, the fast-weight state is a constant-size cache."""

from __future__ import annotations

import shutil

import pytest
import torch

pytest.importorskip("transformers", reason="needs the hf extra: pip install 'fastweights[hf]'")
pytest.importorskip("tokenizers", reason="needs the hf extra: pip install 'fastweights[hf]'")

from transformers import AutoModelForCausalLM, AutoTokenizer

import fastweights
import fastweights.hf
from fastweights.data.lm import Vocabulary
from fastweights.loading import LoadedLM, save_export
from fastweights.models.lm import build_lm
from fastweights.train.config import LMTrainConfig
from fastweights.train.lm import LMVocab, lm_model_config


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only contend
    yield
    torch.set_num_threads(threads)


TEXT = ["Enter Hamlet, with a book.", "O, that this too too solid flesh would melt -- thaw, and resolve itself",
        "'Tis seem'd so; I know not \"seems\"!", "Ophélie: le cœur… [Exit]", ""]


def export_lm(tmp_path, model: str, vocab: LMVocab | None = None, train_steps: int = 0,
              position_order: str = "forward") -> LoadedLM:
    """A small language model exported to ``tmp_path/model``: random weights, or ``train_steps`` Adam steps on
    sequences that follow a fixed successor of every token (so that greedy decoding walks a varied chain; a random
    tied model tends to repeat its input token for ever)."""
    vocab = vocab or LMVocab(Vocabulary(["<eos>", "<unk>", *[f"w{i}" for i in range(20)]]), "word", "whitespace")
    cfg = LMTrainConfig(model=model, d_model=16, num_layers=2, num_heads=2, head_dim=8, d_ff=32, dropout=0.0,
                        softmax="full", position_order=position_order)
    cfg.validate()
    torch.manual_seed(0)
    lm = build_lm(lm_model_config(cfg, len(vocab.vocab)))
    successor = torch.tensor([(5 * t + 1) % len(vocab.vocab) for t in range(len(vocab.vocab))])
    opt = torch.optim.Adam(lm.parameters(), lr=0.03)
    g = torch.Generator().manual_seed(0)
    for _ in range(train_steps):
        x = [torch.randint(0, len(vocab.vocab), (8,), generator=g)]
        for _ in range(12):
            x.append(successor[x[-1]])
        x = torch.stack(x, dim=1)
        nll, _ = lm(x[:, :-1], targets=x[:, 1:])
        opt.zero_grad()
        nll.mean().backward()
        opt.step()
    loaded = LoadedLM("lm", cfg, lm.eval(), "memory", None, vocab)
    save_export(loaded, tmp_path / "model")
    return loaded


@pytest.mark.parametrize("model", ["delta_net", "delta_rnn", "transformer", "rdn", "lstm"])
def test_greedy_generate_equals_the_projects_decoding(tmp_path, model):
    ours = export_lm(tmp_path, model, train_steps=30)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    assert isinstance(hf, fastweights.hf.FastWeightsForCausalLM) and not hf.training
    for name, t in ours.model.state_dict().items():
        assert torch.equal(t, hf.state_dict()[name]), name
    prompt = torch.tensor([[3, 7, 2, 9], [5, 5, 1, 12]])
    out = hf.generate(prompt, max_new_tokens=16, do_sample=False)
    expected = ours.model.generate(prompt, 16, temperature=0)
    assert torch.equal(out[:, :4], prompt)
    assert out[:, 4:].tolist() == expected.tolist()
    assert len(set(expected[0].tolist())) > 2  # not a degenerate repetition
    top1 = hf.generate(prompt, max_new_tokens=16, do_sample=True, top_k=1)
    assert torch.equal(top1, out)


def state_bytes(state) -> int:
    return sum(t.numel() * t.element_size() for t in torch.utils._pytree.tree_leaves(state)
               if isinstance(t, torch.Tensor))


@pytest.mark.parametrize(("model", "grows"), [("delta_net", False), ("delta_rnn", False), ("rdn", False),
                                              ("delta_lstm", False), ("transformer", True)])
def test_the_state_is_the_cache_and_constant_for_fast_weights(tmp_path, model, grows):
    export_lm(tmp_path, model)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    out = hf(torch.tensor([[3, 4, 5]]), use_cache=True)
    sizes = []
    token = out.logits[:, -1].argmax(-1, keepdim=True)
    state = out.fw_state
    for _ in range(8):
        step = hf(token, fw_state=state, use_cache=True)
        state, token = step.fw_state, step.logits[:, -1].argmax(-1, keepdim=True)
        sizes.append(state_bytes(state))
    assert (sizes[-1] > sizes[0]) == grows and (len(set(sizes)) == 1) == (not grows), sizes
    full = hf(torch.tensor([[3, 4, 5, 1, 2]])).logits[:, -1]
    split = hf(torch.tensor([[1, 2]]), fw_state=out.fw_state).logits[:, -1]
    torch.testing.assert_close(split, full, rtol=1e-5, atol=1e-5)  # carrying the state continues the sequence


@pytest.mark.parametrize(("level", "tokenizer"), [("word", "whitespace"), ("word", "punctuation"), ("char", None)])
def test_auto_tokenizer_encodes_like_the_corpus_reader(tmp_path, level, tokenizer):
    vocab = LMVocab(Vocabulary.build(TEXT[:3], level, tokenizer or "whitespace"), level, tokenizer)
    export_lm(tmp_path, "delta_net", vocab)
    tok = AutoTokenizer.from_pretrained(tmp_path / "model")
    for text in [*TEXT, "Enter Hamlet\nwith a book", "two\n\nlines"]:
        if text:
            assert tok(text).input_ids == vocab.encode(text), text
    if level == "char":
        assert tok.decode(vocab.encode("a b\nto")) == "a b\nto"


def test_labels_give_the_mean_next_token_loss_and_save_pretrained_round_trips(tmp_path):
    ours = export_lm(tmp_path, "delta_rnn")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    ids = torch.tensor([[3, 7, 2, 9, 4, 4]])
    loss = hf(ids, labels=ids).loss
    nll, _ = ours.model(ids[:, :-1], targets=ids[:, 1:])
    torch.testing.assert_close(loss, nll.mean(), rtol=1e-6, atol=1e-6)
    hf.save_pretrained(tmp_path / "saved")  # transformers' config.json and safetensors file, read by fastweights
    shutil.copy(tmp_path / "model" / "vocab.json", tmp_path / "saved")
    back = fastweights.from_pretrained(tmp_path / "saved")
    x = torch.randint(0, 22, (2, 7))
    assert torch.equal(back.model(x)[0], ours.model(x)[0])


def test_non_language_models_and_padding_are_refused(tmp_path):
    from fastweights.train.config import TrainConfig

    cfg = TrainConfig(task="listops", model="delta_net", d_model=8, num_layers=1, num_heads=2)
    from fastweights.loading import LoadedAlgorithmic
    from fastweights.models import build_model
    from fastweights.train.algorithmic import TaskVocab, model_config

    vocab = TaskVocab("listops", [str(i) for i in range(10)] + ["[MIN", "[MAX", "[FIRST", "]"],
                      [str(i) for i in range(10)])
    save_export(LoadedAlgorithmic("listops", cfg, build_model(model_config(cfg, vocab)), "memory", None, vocab),
                tmp_path / "listops")
    with pytest.raises(ValueError, match=r"transformers loads exported language models only, got a 'listops'"):
        AutoModelForCausalLM.from_pretrained(tmp_path / "listops")
    export_lm(tmp_path, "delta_net")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    with pytest.raises(ValueError, match="attention_mask: padding is not supported"):
        hf.generate(torch.tensor([[0, 3, 4]]), attention_mask=torch.tensor([[0, 1, 1]]), max_new_tokens=2)


def test_reversed_positions_generate_without_a_cache_only(tmp_path):
    """The paper's truncated-context models number positions from the end of each call: no state to continue from,
    but generate(use_cache=False) re-reads the sequence at every step and equals the argmax of full forwards."""
    ours = export_lm(tmp_path, "delta_net", position_order="reversed", train_steps=30)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    prompt = torch.tensor([[3, 7, 2]])
    with pytest.raises(ValueError, match=r"fw_state: this model adds reversed positions.*use_cache=False"):
        hf.generate(prompt, max_new_tokens=3, do_sample=False)
    out = hf.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=False)
    seq = prompt
    with torch.no_grad():
        for _ in range(6):
            seq = torch.cat([seq, ours.model(seq)[0][:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, seq)
