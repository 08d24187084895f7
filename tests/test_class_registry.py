"""Register-by-key (attributor.registry): explicit keys everywhere; for the Task family, class-name
keys for concrete subclasses and replacement of a redefined class (a notebook cell run again)."""

from __future__ import annotations

import warnings

import pytest

from attributor.errors import UnknownNameError
from attributor.registry import Registered
from attributor.tasks import ClassificationTask, Task, get_task


def _define_plain_task():
    class NotebookTask(Task):
        def train_loss(self, model, batch):
            return batch

        def measurement(self, model, batch):
            return batch

    return NotebookTask


def test_a_concrete_task_without_key_registers_under_its_class_name():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # another test may have defined it already
        cls = _define_plain_task()
    assert Task.lookup("NotebookTask") is cls and cls.key == "NotebookTask"
    assert isinstance(get_task("NotebookTask"), cls) and cls().spec() == {"task": "NotebookTask"}


def test_abstract_tasks_are_not_registered():
    class HalfTask(Task):
        def measurement(self, model, batch):
            return batch

    assert "HalfTask" not in Task.names()
    with pytest.raises(UnknownNameError):
        Task.lookup("HalfTask")


def test_subclasses_of_builtins_register_under_their_own_name():
    class MarginOnHead(ClassificationTask):
        def tracked_parameters(self, model):
            return ["head.weight"]

    assert Task.lookup("MarginOnHead") is MarginOnHead and Task.lookup("classification") is ClassificationTask


def test_redefining_a_task_replaces_it_with_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = _define_plain_task()
    with pytest.warns(UserWarning, match="'NotebookTask' is defined again .*replaces the old one"):
        second = _define_plain_task()
    assert second is not first and Task.lookup("NotebookTask") is second


def test_redefining_with_an_explicit_key_also_replaces():
    def define():
        class Keyed(Task, key="test-registry-keyed"):
            def train_loss(self, model, batch):
                return batch

            measurement = train_loss

        return Keyed

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        define()
    with pytest.warns(UserWarning):
        again = define()
    assert Task.lookup("test-registry-keyed") is again


def test_another_class_claiming_a_taken_key_still_raises():
    with pytest.raises(ValueError, match="'classification' is registered twice.*another key"):
        class Impostor(Task, key="classification"):
            def train_loss(self, model, batch):
                return batch

            measurement = train_loss
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _define_plain_task()
    with pytest.raises(ValueError, match="registered twice"):
        class NotebookTask(Task):  # same name, another qualname: another class
            def train_loss(self, model, batch):
                return batch

            measurement = train_loss


def test_other_families_keep_explicit_keys_and_refuse_redefinition():
    class Greeter(Registered, kind="test greeter"):
        def hello(self):
            return "hi"

    class Hello(Greeter):  # concrete, no key: not registered in a family without auto_key
        pass

    assert Greeter.names() == []

    def define():
        class Keyed(Greeter, key="keyed"):
            pass

    define()
    with pytest.raises(ValueError, match="registered twice"):
        define()


def test_auto_key_is_declared_at_the_family_root_only():
    with pytest.raises(TypeError, match="auto_key is declared once"):
        class Wrong(Task, auto_key=True):
            pass
