"""A tiny token-input model for campaign tests (spec `token_model.py:factory`, inputs `input_ids`,
`attention_mask`): embedding, a masked mean and an MLP, so every layer is prunable without attention."""

import torch
from torch import nn


class TokenNet(nn.Module):
    def __init__(self, vocab_size: int = 30):
        super().__init__()
        self.config = type("Config", (), {"vocab_size": vocab_size})()  # read by toolchain.inputs.vocab_size_of
        self.embed = nn.Embedding(vocab_size, 16)
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 4)

    def forward(self, input_ids, attention_mask):
        mask = attention_mask.unsqueeze(-1).to(torch.float32)
        hidden = torch.relu(self.fc1(self.embed(input_ids)))
        return {"logits": self.fc2((hidden * mask).sum(1) / mask.sum(1))}


def factory():
    return TokenNet().eval()
