"""Train glm4v-tiny, glmkit's embedded GLM-4V, to answer questions about generated pictures (offline, on a CPU).

    python scripts/train_glm4v_tiny.py [--steps 1500] [--out sources/data/glm4v-tiny]

1. Starts from synthetic:glm4v:tiny: GLM-4V-9B's layout (chatglm language model with `vision_config`, the
   `transformer.vision.*` tower), glm4-tiny's tokenizer, seeded random weights.
2. Trains the language model (through its glm-layout remap, transformers' GlmForCausalLM) and glmkit's torch
   vision tower together, on sources/pictures.py's questions — shape, colour, place, the word written — in
   GLM-4V's prompt format (glm4/vision.py: the image's features in place of its marker tokens, the original's
   positions); only the answer and its stop token are targets.
3. Writes the checkpoint back in the original layout (fp16) with its held-out accuracy, measured on pictures of
   their own seed through glmkit's SourceModel (the reference every conversion is checked against).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from pathlib import Path

import torch

from glmkit.common import manifest
from glmkit.convert import vision_tower
from glmkit.convert.openvino_glm4v import SourceModel
from glmkit.glm4 import families, vision
from glmkit.glm4 import prompt as prompts
from glmkit.runtimes import images
from glmkit.runtimes.tokenizer import from_hf
from glmkit.sources import pictures, remap, shards, synthetic
from glmkit.sources.checkpoint import open_checkpoint


def batch(examples: list[dict], tok, embed, tower, cfg: dict):
    """inputs_embeds, position_ids, attention_mask and labels of a right-padded batch."""
    v = cfg["vision_config"]
    fmt = families.CHAT_FORMATS["glm4v"]
    pixels = torch.from_numpy(__import__("numpy").concatenate(
        [vision.preprocess(images.read(e["image"]).rgb, v["image_size"]) for e in examples]))
    features = tower(pixels)
    rows = []
    for i, e in enumerate(examples):
        rendered = prompts.from_messages(tok, e["messages"], fmt)
        answer = tok.encode("\n" + e["answer"]) + [tok.special_ids[families.EOS_TOKEN]]
        ids = rendered.ids + answer
        b = ids.index(cfg["boi_token_id"])
        x = embed(torch.tensor(ids))
        spliced = torch.cat([x[:b], features[i], x[b + vision.MARKER_TOKENS:]])
        positions = vision.positions(ids, cfg["boi_token_id"], v["image_size"], v["patch_size"])
        labels = [-100] * (len(spliced) - len(answer)) + answer
        rows.append((spliced, positions, labels))
    n = max(len(r[0]) for r in rows)
    hidden = rows[0][0].shape[-1]
    embeds = torch.zeros(len(rows), n, hidden)
    pos = torch.zeros(len(rows), n, dtype=torch.long)
    mask = torch.zeros(len(rows), n, dtype=torch.long)
    labels = torch.full((len(rows), n), -100)
    for i, (x, p, y) in enumerate(rows):
        embeds[i, :len(x)], pos[i, :len(p)], mask[i, :len(x)], labels[i, :len(y)] = x, torch.tensor(p), 1, \
            torch.tensor(y)
    return embeds, pos, mask, labels


def save(model, tower, base: Path, out: Path, report: dict) -> None:
    """The trained weights in GLM-4V's original layout (fp16), beside the base checkpoint's other files."""
    shutil.copytree(base, out)
    for f in out.glob("*.safetensors*"):
        f.unlink()
    glm = ((name, t.detach().to(torch.float16)) for name, t in model.state_dict().items())
    writer = shards.ShardWriter(out)
    for name, t in synthetic.chatglm_tensors(glm, model.config.to_dict()):
        writer.add(name, t.contiguous())
    for name, t in tower.state_dict().items():
        writer.add(vision_tower.PREFIX + name, t.detach().to(torch.float16).contiguous())
    writer.close()
    cfg = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**cfg, "torch_dtype": "float16"}, indent=2) + "\n")
    manifest.write(out, report)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--held-out", type=int, default=80)
    ap.add_argument("--init", help="continue from this glm4v-tiny checkpoint instead of synthetic:glm4v:tiny")
    ap.add_argument("--out", default="sources/data/glm4v-tiny")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        if args.init:
            shutil.copytree(args.init, base)
        else:
            base.mkdir()
            synthetic.write("glm4v", "tiny", base, seed=args.seed, quiet=True)
        ckpt = open_checkpoint(base)
        glm_dir = Path(tmp) / "glm"
        glm_dir.mkdir()
        remap.write_checkpoint(ckpt, glm_dir, quiet=True)
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(glm_dir, dtype=torch.float32).train()
        tower = vision_tower.load(ckpt).train()
        tok = from_hf(glm_dir)
        params = list(model.parameters()) + list(tower.parameters())
        opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=args.steps, pct_start=0.1)
        t0 = time.time()
        for step in range(1, args.steps + 1):
            embeds, pos, mask, labels = batch([pictures.task(rng) for _ in range(args.batch)], tok,
                                              model.get_input_embeddings(), tower, ckpt.config)
            loss = model(inputs_embeds=embeds, position_ids=pos, attention_mask=mask, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            if step % 50 == 0 or step == 1:
                print(f"step {step}/{args.steps} loss {loss.item():.4f} ({time.time() - t0:.0f} s)", flush=True)
        model.eval(), tower.eval()
        out = Path(args.out)
        staged = out.with_name(out.name + ".new")
        shutil.rmtree(staged, ignore_errors=True)
        before = (manifest.read(base) or {}).get("steps", 0) if args.init else 0
        save(model, tower, base, staged, {"source": "scripts/train_glm4v_tiny.py", "steps": before + args.steps,
                                          "stages": (manifest.read(base) or {}).get("stages", [])
                                          + [{"steps": args.steps, "lr": args.lr, "seed": args.seed}],
                                          "seed": args.seed, "family": "glm4v"})
        source_dir = Path(tmp) / "check"
        source_dir.mkdir()
        trained = open_checkpoint(staged)
        remap.write_checkpoint(trained, source_dir, quiet=True)
        result = pictures.accuracy(SourceModel(source_dir, trained).answer, pictures.held_out(args.held_out))
        print(f"held-out accuracy {result['accuracy']:.1%} {result['by_kind']}")
        manifest.write(staged, {**manifest.read(staged), "held_out": result,
                                "seconds": round(time.time() - t0)})
        shutil.rmtree(out, ignore_errors=True)
        staged.rename(out)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
