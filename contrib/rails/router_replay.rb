# frozen_string_literal: true

# Router replay for Rails: a read-only app hands a request it cannot serve
# (it writes) back to the router, which replays it on the primary app.
#
# Drop this file into config/initializers/. No gem is needed, it runs on
# Ruby 2.7 and 3.x, and the same code runs on the primary, where a read-only
# database never refuses a write.
#
# A write on the follower fails with PostgreSQL's read_only_sql_transaction
# (SQLSTATE 25006), which reaches Rails as ActiveRecord::StatementInvalid
# (its cause PG::ReadOnlySqlTransaction), as ActiveRecord::ReadOnlyError,
# or, when the write happens while a view renders, wrapped in
# ActionView::Template::Error. The kit looks through the whole cause chain,
# and answers 503 with "X-Router-Replay: primary" and nothing else: the
# router discards that answer, sends the request to the primary, and
# returns the primary's answer to the client.
#
# It catches the error in two places:
# - in controllers (rescue_from on ActionController::Base, which tries an
#   exception's causes too): the request ends as "Completed 503" with one
#   info line, not a 500 with a FATAL entry;
# - in a middleware just below ActionDispatch::DebugExceptions, for writes
#   outside controllers. Being below it, the middleware sees the error
#   before DebugExceptions renders it (development) or logs it and lets
#   ShowExceptions render a 500 (production): it works the same in both.
#   Being above the session middleware, a replayed request changes no
#   session on the read-only app.
module RouterReplay
  HEADER = "X-Router-Replay"
  READ_ONLY_SQLSTATE = "25006" # read_only_sql_transaction

  # Whether error, or any error in its cause chain, is a write that a
  # read-only database refused.
  def self.read_only?(error)
    seen = {}
    while error && !seen[error.object_id]
      seen[error.object_id] = true
      return true if defined?(ActiveRecord::ReadOnlyError) && error.is_a?(ActiveRecord::ReadOnlyError)
      return true if defined?(PG::ReadOnlySqlTransaction) && error.is_a?(PG::ReadOnlySqlTransaction)
      return true if sqlstate(error) == READ_ONLY_SQLSTATE
      error = error.cause
    end
    false
  end

  def self.sqlstate(error)
    return nil unless error.respond_to?(:result) && defined?(PG::Result)
    result = error.result
    result.respond_to?(:error_field) ? result.error_field(PG::Result::PG_DIAG_SQLSTATE) : nil
  rescue StandardError
    nil
  end

  def self.response
    [503, { HEADER => "primary", "Content-Type" => "text/plain; charset=utf-8", "Cache-Control" => "no-store" },
     ["replay on the primary\n"]]
  end

  def self.log(method, path, error)
    Rails.logger.info("[router_replay] #{method} #{path}: the database is read-only " \
                      "(#{error.class}); the router replays the request on the primary")
  end

  # Rack middleware, for writes made outside controllers.
  class Middleware
    def initialize(app)
      @app = app
    end

    def call(env)
      @app.call(env)
    rescue StandardError => e
      raise unless RouterReplay.read_only?(e)
      RouterReplay.log(env["REQUEST_METHOD"], env["PATH_INFO"], e)
      RouterReplay.response
    end
  end

  # Controller concern: rescue_from tries the exception and then its
  # causes, so a write from a view (ActionView::Template::Error) is caught
  # through its cause.
  module Controller
    def self.included(base)
      base.rescue_from "ActiveRecord::StatementInvalid", "ActiveRecord::ReadOnlyError" do |error|
        raise error unless RouterReplay.read_only?(error)
        RouterReplay.log(request.request_method, request.fullpath, error)
        status, headers, body = RouterReplay.response
        response.headers.merge!(headers)
        render plain: body.join, status: status
      end
    end
  end
end

ActiveSupport.on_load(:action_controller_base) { include RouterReplay::Controller }
Rails.application.config.middleware.insert_after ActionDispatch::DebugExceptions, RouterReplay::Middleware
