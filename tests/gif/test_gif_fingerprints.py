"""GIF fingerprints against float64 references on tiny problems (no encoder needed)."""

import numpy as np
import pytest
import torch

from attributor.errors import ConfigError
from attributor.gif import GifFingerprinter, ProbeGradientFingerprinter, fingerprinter_names, make_fingerprinter
from attributor.gif.probe import kmeans_labels, probe_gradients, projection_matrix, train_probe


def _probe(seed=0, n=24, d=8, classes=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    labels = kmeans_labels(x, classes, seed=seed)
    return x, train_probe(x, labels, classes, hidden=5, epochs=3, batch_size=8, seed=seed)


def test_probe_gradient_equals_autograd_per_example():
    x, probe = _probe()
    reference = probe.double()
    x64 = torch.from_numpy(x).double()
    grads = probe_gradients(reference, x64)
    for i in range(len(x)):
        logits = reference(x64[i:i + 1])
        loss = torch.nn.functional.cross_entropy(logits, logits.argmax(1))
        expected = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(reference.parameters()))])
        torch.testing.assert_close(grads[i], expected, rtol=1e-10, atol=1e-12)


def test_projection_is_seeded_with_unit_rows():
    a, b, c = projection_matrix(50, 4, seed=1), projection_matrix(50, 4, seed=1), projection_matrix(50, 4, seed=2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(4))


def test_probe_gradient_fingerprint_is_unit_projected_gradient():
    rng = np.random.default_rng(3)
    e = rng.normal(size=(20, 6)).astype(np.float32)
    fp = ProbeGradientFingerprinter(dim=4, n_clusters=3, hidden=5, epochs=2, seed=3).fit_embeddings(e)
    again = ProbeGradientFingerprinter(dim=4, n_clusters=3, hidden=5, epochs=2, seed=3).fit_embeddings(e)
    assert fp._fit_digest() == again._fit_digest()
    rows = fp.gradient_features(e)
    g = probe_gradients(fp.probe_.double(), torch.from_numpy(e).double()).numpy()
    projected = g @ projection_matrix(g.shape[1], 4, seed=3).double().numpy().T
    expected = projected / np.linalg.norm(projected, axis=1, keepdims=True)
    np.testing.assert_allclose(rows, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-5)
    # training rows take their (pseudo-)labels, not the prediction
    assert fp.labels_.shape == (20,)
    with_labels = fp.gradient_features(e, fp.labels_)
    g = probe_gradients(fp.probe_.double(), torch.from_numpy(e).double(), torch.from_numpy(fp.labels_)).numpy()
    projected = g @ projection_matrix(g.shape[1], 4, seed=3).double().numpy().T
    np.testing.assert_allclose(with_labels, projected / np.linalg.norm(projected, axis=1, keepdims=True), rtol=1e-4, atol=1e-5)


def test_gif_concatenation_weights_unit_parts():
    rng = np.random.default_rng(0)
    e, c = rng.normal(size=(5, 7)) * 3, rng.normal(size=(5, 4)) * 0.1
    h = GifFingerprinter(alpha=2.0, beta=0.5).combine(e, c)
    assert h.shape == (5, 11) and h.dtype == np.float32
    np.testing.assert_allclose(h[:, :7], 2.0 * e / np.linalg.norm(e, axis=1, keepdims=True), rtol=1e-5)
    np.testing.assert_allclose(h[:, 7:], 0.5 * c / np.linalg.norm(c, axis=1, keepdims=True), rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(h, axis=1), np.sqrt(2.0 ** 2 + 0.5 ** 2), rtol=1e-5)


def test_registry_and_bad_arguments():
    assert {"embedding", "probe-gradient", "gif", "model-gradient"} <= set(fingerprinter_names())
    with pytest.raises(ConfigError):
        make_fingerprinter("gif", gamma=1.0)
    with pytest.raises(ConfigError, match="both 0"):
        GifFingerprinter(alpha=0, beta=0).fit(["a text"])
