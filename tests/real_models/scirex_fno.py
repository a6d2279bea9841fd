# ruff: noqa
# fmt: off
# (Copied code, kept as written: neither linted nor formatted.)
# Copyright (c) 2024 Zenteiq Aitech Innovations Private Limited and
# AiREX Lab, Indian Institute of Science, Bangalore.
# All rights reserved.
#
# This file is part of SciREX
# (Scientific Research and Engineering eXcellence Platform),
# developed jointly by Zenteiq Aitech Innovations and AiREX Lab
# under the guidance of Prof. Sashikumaar Ganesan.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
#
# For any clarifications or special considerations,
# please contact: contact@scirex.org
#
# SciREX's Fourier neural operator (FNO) and the layers it is built of, from
# https://github.com/sharad-zenteiq-ai/SciREX at commit cbcb538efd6e58deb242771020090f5389142552
# (scirex/operators/): layers/spectral_conv.py, layers/skip_connection.py,
# layers/channel_mlp.py, layers/embeddings.py, layers/padding.py, layers/fno_block.py,
# models/fno.py, each under the licence header above. Its InstanceNorm normalises every FNO
# block's output with `use_norm=True`.
# Copied as written but for: the files are concatenated here (their relative imports and
# repeated headers dropped, their imports gathered at the top), and `nn.InstanceNorm` is
# imported on a line of its own (`from flax.linen import InstanceNorm`), the one line the
# tests swap.

from typing import Callable, List, Literal, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.linen import InstanceNorm


# --- scirex/operators/layers/spectral_conv.py -----------------------------------------------
class SpectralConv(nn.Module):
    """
    N-dimensional Spectral Convolution layer (supports 2D and 3D).
    
    The dimensionality is automatically inferred from the length of ``n_modes``:
      - ``len(n_modes) == 2`` → 2D spectral convolution (RFFT2)
      - ``len(n_modes) == 3`` → 3D spectral convolution (RFFT3)
    
    This layer performs a convolution in the Fourier domain by:
    1. Transforming the input to the frequency domain using a Real Fast Fourier Transform (RFFT).
    2. Multiplying the lower Fourier modes by learnable complex weights.
    3. Inverse transforming the filtered signal back to the spatial domain.
    
    This operation provides a global receptive field, as each Fourier mode 
    carries information from the entire spatial domain.
    
    Attributes:
        in_channels (int): Number of input channels.
        out_channels (int): Number of output channels.
        n_modes (Tuple[int, ...]): Number of Fourier modes to retain for each spatial dimension.
            Length 2 for 2D, length 3 for 3D.
        init_std (float, optional): Standard deviation for weight initialization.
    """
    in_channels: int
    out_channels: int
    n_modes: Tuple[int, ...]
    init_std: float = None

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        # x shape: (batch, dim1, dim2, ..., dimN, in_channels)
        n_dim = len(self.n_modes)
        batch = x.shape[0]
        spatial_dims = x.shape[1:-1]
        
        # 1. FFT
        axes = tuple(range(1, n_dim + 1))
        x_ft = jnp.fft.rfftn(x, axes=axes, norm="ortho")
        
        # 2. Weights
        scale = 0.05 if self.init_std is None else self.init_std
        weights_shape = (self.in_channels, self.out_channels) + self.n_modes
        
        # For N dimensions, the number of corners in frequency space is 2**(N-1).
        # We generate combinations of (start, end) for all dimensions except the last spatial one.
        # The last spatial dimension is only positive frequencies (due to RFFT).
        n_corners = 2**(n_dim - 1)
        weights = [
            self.param(f'weights_{i+1}', jax.nn.initializers.normal(stddev=scale), weights_shape, jnp.complex64)
            for i in range(n_corners)
        ]
        
        # Create output tensor in frequency domain
        out_ft_shape = (batch,) + spatial_dims[:-1] + (spatial_dims[-1] // 2 + 1,) + (self.out_channels,)
        out_ft = jnp.zeros(out_ft_shape, dtype=jnp.complex64)
        
        # Build dynamic einsum string (e.g., N=2 -> "bxyi,ioxy->bxyo")
        import itertools
        spatial_letters = "xyzuvw"[:n_dim]
        einsum_str = f"b{spatial_letters}i,io{spatial_letters}->b{spatial_letters}o"
        
        # Iterate over all combinations of positive and negative frequencies for the first N-1 dims.
        # 1 means [:modes], -1 means [-modes:]
        corner_idx = 0
        for signs in itertools.product([1, -1], repeat=n_dim - 1):
            slices_in = [slice(None)]  # batch
            slices_out = [slice(None)] # batch
            
            for d, sign in enumerate(signs):
                modes = self.n_modes[d]
                if sign == 1:
                    slices_in.append(slice(None, list(self.n_modes)[d]))
                    slices_out.append(slice(None, list(self.n_modes)[d]))
                else:
                    slices_in.append(slice(-list(self.n_modes)[d], None))
                    slices_out.append(slice(-list(self.n_modes)[d], None))
                    
            # Last spatial dimension (always positive frequencies for rfft)
            slices_in.append(slice(None, self.n_modes[-1]))
            slices_out.append(slice(None, self.n_modes[-1]))
            
            # Channel dimension
            slices_in.append(slice(None))
            slices_out.append(slice(None))
            
            # Apply einsum for this corner
            x_corner = x_ft[tuple(slices_in)]
            w_corner = weights[corner_idx]
            
            out_corner = jnp.einsum(einsum_str, x_corner, w_corner)
            out_ft = out_ft.at[tuple(slices_out)].set(out_corner)
            
            corner_idx += 1
            
        # 4. Inverse FFT
        x = jnp.fft.irfftn(out_ft, s=spatial_dims, axes=axes, norm="ortho")
        return x



# --- scirex/operators/layers/skip_connection.py ---------------------------------------------
class SoftGating(nn.Module):
    """
    Parametric channel-wise gating mechanism.
    
    Multiplies each channel by a learnable scalar weight. Helps the model 
    dynamically prioritize certain feature channels during the bypass operation.
    """
    in_channels: int

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        # weight shape: (1, ..., 1, in_channels) for broadcasting
        # Standard Flax Dense logic handles channels last.
        # We want a learnable weight per channel.
        shape = [1] * x.ndim
        shape[-1] = self.in_channels
        
        w = self.param('weight', nn.initializers.ones, shape)
        return x * w

class SkipConnection(nn.Module):
    """
    Generic Skip (Bypass) Connection.
    
    Provides a parallel path to the spectral transformations, capturing 
    local information and facilitating gradient flow. 
    Matches the flexibility of the standard neuraloperator implementation.
    """
    out_channels: int
    skip_type: Literal["identity", "linear", "soft-gating"] = "linear"

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        if self.skip_type == "identity":
            return x
        elif self.skip_type == "linear":
            return nn.Dense(self.out_channels, use_bias=False)(x)
        elif self.skip_type == "soft-gating":
            return SoftGating(in_channels=self.out_channels)(x)
        else:
            raise ValueError(f"Unknown skip_type: {self.skip_type}")


# --- scirex/operators/layers/channel_mlp.py -------------------------------------------------
class ChannelMLP(nn.Module):
    """
    Unified Channel MLP (Point-wise MLP) for GINO and FNO.
    Standardized to JAX/Flax channels-last convention (B, ..., C).

    This implementation combines the efficiency of the FNO version with 
    additional features (dropout) often required for GINO.

    Attributes:
        out_channels (int): Dimensionality of the output representation.
        hidden_channels (int, optional): Width of internal layers. Defaults to out_channels.
        n_layers (int): Total number of linear transformations.
        activation (Callable): Activation function between layers.
        dropout_rate (float): Dropout probability.
    """
    out_channels: int
    hidden_channels: Optional[int] = None
    n_layers: int = 1
    activation: Callable = nn.gelu
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x: jnp.ndarray, deterministic: bool = True) -> jnp.ndarray:
        hidden = self.hidden_channels if self.hidden_channels is not None else self.out_channels
        
        for i in range(self.n_layers):
            is_last = (i == self.n_layers - 1)
            layer_out = self.out_channels if is_last else hidden
            
            x = nn.Dense(layer_out, name=f"dense_{i}")(x)
            
            if not is_last:
                x = self.activation(x)
                if self.dropout_rate > 0:
                    x = nn.Dropout(rate=self.dropout_rate, name=f"dropout_{i}")(
                        x, deterministic=deterministic
                    )
                    
        return x

class LinearChannelMLP(nn.Module):
    """
    Linear Channel MLP with explicit layer sizes.
    
    Attributes:
        layers (Sequence[int]): List of channel sizes. The first element is treated 
            as input (ignored by nn.Dense) and subsequent as layer widths.
        activation (Callable): Activation function.
        dropout_rate (float): Dropout probability.
    """
    layers: Sequence[int]
    activation: Callable = nn.gelu
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x: jnp.ndarray, deterministic: bool = True) -> jnp.ndarray:
        n_layers = len(self.layers) - 1
        assert n_layers >= 1, "Layers sequence must contain at least [in_channels, out_channels]"

        for i in range(n_layers):
            is_last = (i == n_layers - 1)
            x = nn.Dense(self.layers[i + 1], name=f"dense_{i}")(x)

            if not is_last:
                x = self.activation(x)
                if self.dropout_rate > 0.0:
                    x = nn.Dropout(rate=self.dropout_rate, name=f"dropout_{i}")(
                        x, deterministic=deterministic
                    )

        return x

# --- scirex/operators/layers/embeddings.py --------------------------------------------------
class GridEmbedding(nn.Module):
    """
    Cartesian Coordinate Embedding (Grid Features).
    
    Appends normalized spatial coordinates (x, y, z, ...) as additional 
    input channels. This breaks translation invariance and provides the 
    neural operator with explicit geometric context.

    Attributes:
        grid_boundaries (Tuple): Start and end points for each spatial dimension.
        endpoint (bool): Whether to include the stop point in the grid.
                        Set to False for periodic domains (half-open interval [start, end)).
                        Set to True for non-periodic domains (closed interval [start, end]).
    """
    grid_boundaries: Tuple[Tuple[float, float], ...] = ((0.0, 1.0), (0.0, 1.0))
    endpoint: bool = True

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """
        x: (batch, ..., in_channels)
        returns: (batch, ..., in_channels + n_dim)
        """
        shape = x.shape
        batch_size = shape[0]
        spatial_dims = shape[1:-1]
        n_dim = len(spatial_dims)
        
        # Create grid for each dimension
        grid_coords = []
        for i, (start, end) in enumerate(self.grid_boundaries):
            res = spatial_dims[i]
            # Create a 1D coordinate array
            coords = jnp.linspace(start, end, res, endpoint=self.endpoint)
            
            # Reshape it to be broadcastable to the full spatial shape
            reshape_shape = [1] * n_dim
            reshape_shape[i] = res
            coords = coords.reshape(reshape_shape)
            
            # Broadcast to the full spatial shape
            coords = jnp.broadcast_to(coords, spatial_dims)
            grid_coords.append(coords)
            
        # Stack coordinates: (nx, ny, ..., n_dim)
        grid = jnp.stack(grid_coords, axis=-1)
        
        # Add batch dimension: (batch, nx, ny, ..., n_dim)
        grid = jnp.broadcast_to(grid[None, ...], (batch_size, *spatial_dims, n_dim))
        
        # Concatenate along the channel dimension
        return jnp.concatenate([x, grid], axis=-1)

class SinusoidalEmbedding(nn.Module):
    """
    Sinusoidal multi-scale embedding (e.g., for NeRF-style or Transformers).
    
    Attributes:
        num_frequencies (int): Number of frequency scales.
        embedding_type (str): 'transformer' or 'nerf'.
        max_positions (int): Base for the frequency scaling in 'transformer' type.
    """
    num_frequencies: int
    embedding_type: str = "transformer"
    max_positions: int = 10000

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """
        x: (batch, ..., in_channels)
        returns: (batch, ..., in_channels * num_frequencies * 2)
        """
        in_channels = x.shape[-1]
        
        if self.embedding_type == "nerf":
            freqs = (2 ** jnp.arange(self.num_frequencies)) * jnp.pi
        else:
            k = jnp.arange(self.num_frequencies) / self.num_frequencies * 2.0
            freqs = (1.0 / self.max_positions) ** k

        # Compute frequencies: (..., in_channels, num_freqs)
        # Using einsum for flexibility across any number of spatial dimensions
        # x is (..., in_channels), freqs is (num_freqs)
        out = jnp.einsum("...i,j->...ij", x, freqs)
        
        # Stack sin/cos and flatten to channel dimension
        out = jnp.stack((jnp.sin(out), jnp.cos(out)), axis=-1)
        
        # Reshape to (batch, ..., 2 * in_channels * num_frequencies)
        new_shape = x.shape[:-1] + (-1,)
        return out.reshape(new_shape)

class RotaryEmbedding(nn.Module):
    """
    Rotary Positional Embedding (RoPE) for Channels-Last JAX/Flax.
    
    Attributes:
        dim (int): Dimensionality of the embedding (must be even).
        scale (float): Scaling factor for coordinates.
    """
    dim: int
    scale: float = 1.0

    def setup(self):
        # inv_freq matches the standard RoPE implementation
        self.inv_freq = 1.0 / (10000 ** (jnp.arange(0, self.dim, 2) / self.dim))

    def __call__(self, coords: jnp.ndarray) -> jnp.ndarray:
        """
        coords: (batch, ..., spatial_dim) 
        returns: frequencies (batch, ..., dim)
        """
        # coords are mapped to frequencies
        # coords: (..., C_in), inv_freq: (dim/2,) -> out: (..., C_in, dim/2)
        freqs = jnp.einsum("...i,j->...ij", coords * self.scale, self.inv_freq)
        
        # Repeat to match dim: (batch, ..., C_in, dim)
        freqs = jnp.concatenate((freqs, freqs), axis=-1)
        
        # Flatten the last two dimensions to be the new "channel"
        new_shape = coords.shape[:-1] + (-1,)
        return freqs.reshape(new_shape)

def rotate_half(x: jnp.ndarray) -> jnp.ndarray:
    """Rotates half the hidden dims of the input."""
    x = x.reshape(x.shape[:-1] + (2, -1))
    x1, x2 = x[..., 0, :], x[..., 1, :]
    return jnp.concatenate((-x2, x1), axis=-1)

def apply_rotary_pos_emb(t: jnp.ndarray, freqs: jnp.ndarray) -> jnp.ndarray:
    """Applies RoPE to a tensor."""
    return (t * jnp.cos(freqs)) + (rotate_half(t) * jnp.sin(freqs))

# --- scirex/operators/layers/padding.py -----------------------------------------------------
class DomainPadding(nn.Module):
    """
    Symmetric Spatial Domain Padding.
    
    FNO models assume periodic boundary conditions due to the underlying FFT.
    DomainPadding mitigates boundary artifacts when dealing with non-periodic 
    PDEs by expanding the spatial domain before processing and cropping 
    the result back to the original resolution.

    Args:
        padding (float or List[float]): Percentage of padding (0.0 to 1.0) 
            to apply per spatial dimension.
        mode (str): JAX padding mode (default: 'constant' for zero-padding).
    """
    padding: Union[float, List[float]]
    mode: str = 'constant'

    def setup(self):
        # Logic for calculating actual pixel padding will happen in __call__
        # to handle dynamic input resolutions.
        pass

    def __call__(self, x: jnp.ndarray, inverse: bool = False, original_shape: Tuple = None) -> jnp.ndarray:
        """
        x: (batch, spatial_1, ..., spatial_n, channels)
        inverse: if True, crops the tensor back to original_shape.
        """
        ndim = x.ndim - 2  # Spatial dimensions
        
        if isinstance(self.padding, (float, int)):
            pad_list = [self.padding] * ndim
        else:
            pad_list = self.padding

        if not inverse:
            # Calculate pixel padding (symmetric)
            pad_width = []
            pad_width.append((0, 0)) # Batch
            for i in range(ndim):
                p = int(round(x.shape[i+1] * pad_list[i]))
                pad_width.append((p, p)) # Symmetric padding
            pad_width.append((0, 0)) # Channels
            
            return jnp.pad(x, pad_width, mode=self.mode)
        else:
            # Crop back
            if original_shape is None:
                raise ValueError("original_shape must be provided for inverse padding (cropping)")
            
            slices = [slice(None)] # Batch
            for i in range(ndim):
                p = int(round(original_shape[i+1] * pad_list[i]))
                slices.append(slice(p, p + original_shape[i+1]))
            slices.append(slice(None)) # Channels
            
            return x[tuple(slices)]


# --- scirex/operators/layers/fno_block.py ---------------------------------------------------
class FNOBlock(nn.Module):
    """
    N-dimensional Fourier Neural Operator (FNO) Block (supports 2D and 3D).
    
    The dimensionality is automatically inferred from the length of ``n_modes``:
      - ``len(n_modes) == 2`` → 2D FNO block
      - ``len(n_modes) == 3`` → 3D FNO block
    
    This block implements a single iterative step of the FNO architecture, 
    combining a spectral convolution for global feature learning with a 
    standard convolution (via SkipConnection) for local feature refinement.
    
    Attributes:
        hidden_channels (int): Dimensionality of the latent representation.
        n_modes (Tuple[int, ...]): Number of Fourier modes to retain in each
            spatial dimension. Length determines 2D vs 3D.
        activation (Callable): Nonlinear activation function (default: nn.gelu).
        use_norm (bool): Whether to apply Instance Normalization for training stability.
        skip_type (str): Type of bypass connection ('identity', 'linear', or 'soft-gating').
        channel_mlp_skip (str): Type of bypass connection for the Channel MLP refinement.
        use_channel_mlp (bool): Whether to include a point-wise MLP after the spectral layers.
    """
    hidden_channels: int
    n_modes: Tuple[int, ...]
    activation: Callable = nn.gelu
    use_norm: bool = False
    skip_type: Literal["identity", "linear", "soft-gating"] = "linear"
    channel_mlp_skip: Literal["identity", "linear", "soft-gating"] = "soft-gating"
    use_channel_mlp: bool = True

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        # Step 1: Global feature extraction via Spectral Convolution
        y_s = SpectralConv(
            in_channels=self.hidden_channels, 
            out_channels=self.hidden_channels, 
            n_modes=self.n_modes
        )(x)
        
        # Step 2: Local feature extraction via Spatial Skip Connection
        y_p = SkipConnection(
            out_channels=self.hidden_channels, 
            skip_type=self.skip_type
        )(x)
        
        # Step 3: Branch fusion and stabilization
        x = y_s + y_p
        
        if self.use_norm:
            x = InstanceNorm()(x)
        
        x = self.activation(x)

        # Step 4: Point-wise refinement (Channel MLP)
        # Often referred to as the 'modern' FNO variant or 'FNO-MLP'
        if self.use_channel_mlp:
            y_mlp = ChannelMLP(
                out_channels=self.hidden_channels,
                hidden_channels=self.hidden_channels,
                n_layers=2,
                activation=self.activation
            )(x)
            
            y_skip = SkipConnection(
                out_channels=self.hidden_channels,
                skip_type=self.channel_mlp_skip
            )(x)
            
            x = y_mlp + y_skip
            x = self.activation(x)

        return x



# --- scirex/operators/models/fno.py ---------------------------------------------------------
class FNO(nn.Module):
    """
    N-dimensional Fourier Neural Operator (supports 2D and 3D).
    
    The spatial dimensionality is automatically inferred from the length of
    ``n_modes``:
      - ``len(n_modes) == 2`` → 2D FNO  (input shape: batch, nx, ny, channels)
      - ``len(n_modes) == 3`` → 3D FNO  (input shape: batch, nx, ny, nz, channels)
    
    FNO learns operators between functional spaces by parameterized 
    integral kernels in the Fourier domain. This implementation aligns 
    with the standard architecture used in the original neuraloperator
    repository.
    
    The architecture follows a lifting-operator-projection pipeline:
    [Input] -> Lifting (ChannelMLP) -> Iterative FNOBlocks -> Projection (ChannelMLP) -> [Output]

    Attributes:
        hidden_channels (int): Width of the latent spectral representation.
        n_layers (int): Number of stacked FNO blocks.
        n_modes (Tuple[int, ...]): Fourier modes to retain per spatial dimension.
            Length determines 2D vs 3D.
        out_channels (int): Dimensionality of the output field.
        lifting_channel_ratio (int): Expansion factor for the lifting layer.
        projection_channel_ratio (int): Expansion factor for the projection layer.
        use_grid (bool): Whether to append Cartesian coordinates to the input.
        fno_skip (str): Skip connection type for the spectral branch.
        channel_mlp_skip (str): Skip connection type for the MLP refinement.
        use_channel_mlp (bool): Whether to use the MLP refinement branch.
        padding (float/list): Amount of domain padding to handle non-periodic boundaries.
        use_norm (bool): Whether to use InstanceNorm for training stabilization.
        activation (Callable): Activation function for the entire network.
    """
    hidden_channels: int
    n_layers: int
    n_modes: Tuple[int, ...]
    out_channels: int
    lifting_channel_ratio: int = 2
    projection_channel_ratio: int = 2
    use_grid: bool = True
    fno_skip: Literal["identity", "linear", "soft-gating"] = "linear"
    channel_mlp_skip: Literal["identity", "linear", "soft-gating"] = "soft-gating"
    use_channel_mlp: bool = True
    padding: Union[float, List[float]] = 0.0
    use_norm: bool = False
    activation: Callable = nn.gelu

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """
        Executes the forward pass.
        
        Args:
            x (jnp.ndarray): Input tensor.
                - 2D: shape (batch, nx, ny, in_channels)
                - 3D: shape (batch, nx, ny, nz, in_channels)
            
        Returns:
            jnp.ndarray: Predicted field with the same spatial dimensions
            and ``out_channels`` as the last dimension.
        """
        n_dim = len(self.n_modes)
        original_shape = x.shape
        
        # Check if padding is needed (handles both float and list)
        needs_pad = (
            any(p > 0 for p in self.padding)
            if isinstance(self.padding, (list, tuple))
            else self.padding > 0
        )
        
        # 1. Positional Embedding (Grid)
        if self.use_grid:
            grid_boundaries = tuple((0.0, 1.0) for _ in range(n_dim))
            x = GridEmbedding(grid_boundaries=grid_boundaries)(x)
            
        # 2. Domain Padding (to handle non-periodic conditions)
        if needs_pad:
            pad_layer = DomainPadding(padding=self.padding)
            x = pad_layer(x)
            
        # Stage 3: Spectral lifting (Encoder)
        # Maps input channels (e.g., physical parameters + grid) to latent space
        lifting_hidden = self.hidden_channels * self.lifting_channel_ratio
        x = ChannelMLP(
            out_channels=self.hidden_channels,
            hidden_channels=lifting_hidden,
            n_layers=2,
            activation=self.activation
        )(x)
        
        # Stage 4: Iterative Kernel Integration (Processing)
        # Global information propagation through Fourier space
        for _ in range(self.n_layers):
            x = FNOBlock(
                hidden_channels=self.hidden_channels, 
                n_modes=self.n_modes,
                activation=self.activation,
                use_norm=self.use_norm,
                skip_type=self.fno_skip,
                channel_mlp_skip=self.channel_mlp_skip,
                use_channel_mlp=self.use_channel_mlp
            )(x)
            
        # Stage 5: Spectral projection (Decoder)
        # Maps latent representation back to the physical target space
        projection_hidden = self.hidden_channels * self.projection_channel_ratio
        x = ChannelMLP(
            out_channels=self.out_channels,
            hidden_channels=projection_hidden,
            n_layers=2,
            activation=self.activation
        )(x)
        
        # 6. Inverse Domain Padding (Crop)
        if needs_pad:
            x = pad_layer(x, inverse=True, original_shape=original_shape)
        
        return x
