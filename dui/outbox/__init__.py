"""The transactional outbox: the one way the service reaches an external system after a change.

A change and the job that carries it out commit together (``queue.enqueue`` in the caller's transaction);
``dui worker`` then runs the jobs due (``runner.run_due``) with the handlers the app was built with. This
package never imports the layers above it: the handlers (DMP, MSSanté) are passed in at wiring time.
See docs/outbox.md.
"""
