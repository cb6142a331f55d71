"""Flax NNX decoder models that load and save Hugging Face checkpoints."""

from irl_jax.models.config import SUPPORTED_MODEL_TYPES as SUPPORTED_MODEL_TYPES
from irl_jax.models.config import ModelConfig as ModelConfig
from irl_jax.models.config import from_hf_config as from_hf_config
from irl_jax.models.config import to_hf_config as to_hf_config
from irl_jax.models.gguf import gguf_tokenizer as gguf_tokenizer
from irl_jax.models.gguf import read_gguf as read_gguf
from irl_jax.models.heads import PolicyValueModel as PolicyValueModel
from irl_jax.models.heads import RewardModel as RewardModel
from irl_jax.models.heads import ValueModel as ValueModel
from irl_jax.models.heads import last_token_index as last_token_index
from irl_jax.models.hf import from_pretrained as from_pretrained
from irl_jax.models.hf import hf_state_dict as hf_state_dict
from irl_jax.models.hf import save_pretrained as save_pretrained
from irl_jax.models.sampling import SampleOutput as SampleOutput
from irl_jax.models.sampling import generate as generate
from irl_jax.models.transformer import Transformer as Transformer
